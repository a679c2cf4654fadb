"""Serving: batch prediction, fast inference engines (ONNX Runtime), ONNX export, and the REST service.

predict.Predictor scores texts; engines.py holds the inference paths; export.py writes ONNX graphs;
app.py assembles the FastAPI service from parts an application reuses: pool.py (the models and their
micro-batchers, batching.py), routes.py (the routers), middleware.py (key, limits, metrics, strict JSON),
errors.py (the JSON error bodies), metrics.py (Prometheus), settings.py (the limits).
"""
