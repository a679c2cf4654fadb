"""Losses the trainer uses when the model's own loss is not enough."""

from __future__ import annotations

import numpy as np
import torch

from lmadapt.models.loss import classification_loss


def class_weighted_loss(weights: np.ndarray, problem_type: str):
    """compute_loss_func for transformers.Trainer: loss weighted per class (BCE pos_weight for multi-label)."""
    weight = torch.tensor(weights, dtype=torch.float32)

    def compute(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        return classification_loss(logits, labels, problem_type, weight.to(logits.device), num_items_in_batch)

    return compute
