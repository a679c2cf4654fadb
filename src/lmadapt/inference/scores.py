"""From a model's logits to per-label scores and decisions: what every prediction and every metric reads."""

from __future__ import annotations

import numpy as np

from lmadapt.data.labels import MULTI_LABEL


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def scores_from_logits(logits: np.ndarray, task: str) -> np.ndarray:
    return sigmoid(logits) if task == MULTI_LABEL else softmax(logits)


def decisions(scores: np.ndarray, task: str, threshold: float = 0.5) -> np.ndarray:
    """Predicted ids (single-label) or a 0/1 matrix (multi-label) from per-label scores."""
    return (scores >= threshold).astype(int) if task == MULTI_LABEL else scores.argmax(axis=-1)
