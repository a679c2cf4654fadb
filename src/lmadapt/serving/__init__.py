"""Serving: batch prediction, fast inference engines (ONNX Runtime), ONNX export, and the REST service.

predict.Predictor scores texts; engines.py holds the inference paths; export.py writes ONNX graphs;
app.py is the FastAPI service, batching.py its micro-batcher, settings.py its limits.
"""
