"""Losses the trainer uses when the model's own loss is not enough."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lmadapt.data.labels import MULTI_LABEL


def class_weighted_loss(weights: np.ndarray, task: str):
    """compute_loss_func for transformers.Trainer: cross-entropy weighted per class (BCE pos_weight for multi-label)."""
    weight = torch.tensor(weights, dtype=torch.float32)

    def compute(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        w = weight.to(logits.device)
        if task == MULTI_LABEL:
            return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float(), pos_weight=w)
        return nn.functional.cross_entropy(logits.float(), labels, weight=w)

    return compute
