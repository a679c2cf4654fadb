"""Evaluation: metrics, reports and plots."""

from lmadapt.evaluation.metrics import classification_metrics, tune_threshold

__all__ = ["classification_metrics", "tune_threshold"]
