"""Serving: batch prediction (and, later, fast inference and the REST service)."""

from lmadapt.serving.predict import Predictor

__all__ = ["Predictor"]
