"""Inference: a trained run's model on the fastest path here, behind one Predictor.

artifacts.py saves and loads what a strategy trained; engines.py holds the paths (PyTorch fp32 and bf16, ONNX
Runtime, OpenVINO) and picks one; predictor.py batches texts by length and decides labels; scores.py turns logits
into scores and decisions; loading.py builds a run's predictor on a chosen path.
"""
