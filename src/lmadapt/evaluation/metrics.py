"""Metrics for single-label and multi-label classification, from scores to one JSON-ready dict."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from lmadapt.data.labels import MULTI_LABEL, LabelMap
from lmadapt.inference.scores import decisions, scores_from_logits


def _per_class(y_true, y_pred, labels: LabelMap) -> dict:
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true,
        y_pred,
        labels=None if labels.task == MULTI_LABEL else list(range(len(labels))),
        zero_division=0,
    )
    return {
        label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for label, p, r, f, s in zip(labels.labels, precision, recall, f1, support)
    }


def tune_threshold(y_true: np.ndarray, scores: np.ndarray) -> float:
    """The decision threshold with the best micro-F1 (multi-label), on a grid from 0.05 to 0.95."""
    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
    results = [f1_score(y_true, (scores >= t).astype(int), average="micro", zero_division=0) for t in grid]
    return float(grid[int(np.argmax(results))])


def headline_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: LabelMap) -> dict:
    """Accuracy (exact match of the label set, for multi-label) and macro-F1 over every label."""
    every = None if labels.task == MULTI_LABEL else list(range(len(labels)))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", labels=every, zero_division=0)),
    }


def classification_metrics(y_true: np.ndarray, scores: np.ndarray, labels: LabelMap, threshold: float = 0.5) -> dict:
    """Accuracy, macro-F1 and per-class scores (plus micro-F1 and threshold for multi-label)."""
    y_pred = decisions(scores, labels.task, threshold)
    if labels.task == MULTI_LABEL:
        y_true = y_true.astype(int)
        return {
            **headline_metrics(y_true, y_pred, labels),
            "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
            "threshold": threshold,
            "per_class": _per_class(y_true, y_pred, labels),
            "examples": int(len(y_true)),
        }
    every = list(range(len(labels)))
    return {
        **headline_metrics(y_true, y_pred, labels),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", labels=every, zero_division=0)),
        "per_class": _per_class(y_true, y_pred, labels),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=every).tolist(),
        "examples": int(len(y_true)),
    }


def trainer_metrics(labels: LabelMap):
    """compute_metrics for the trainer: the macro-F1 early stopping watches, and accuracy."""

    def compute(prediction) -> dict:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        y_pred = decisions(scores_from_logits(logits, labels.task), labels.task)
        y_true = prediction.label_ids.astype(int) if labels.task == MULTI_LABEL else prediction.label_ids
        return headline_metrics(y_true, y_pred, labels)

    return compute
