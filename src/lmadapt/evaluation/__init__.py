"""Evaluation: metrics, reports and plots."""

from lmadapt.evaluation.metrics import classification_metrics, scores_from_logits, tune_threshold

__all__ = ["classification_metrics", "scores_from_logits", "tune_threshold"]
