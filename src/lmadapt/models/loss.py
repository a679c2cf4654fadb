"""The classification loss every lmadapt model computes, with optional class weights."""

from __future__ import annotations

import torch
from torch import nn

MULTI_LABEL_PROBLEM = "multi_label_classification"


def classification_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    problem_type: str | None,
    weight: torch.Tensor | None = None,
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy (single-label) or binary cross-entropy per label (multi-label), in fp32.

    With `num_items_in_batch` (the Trainer's count over all accumulated micro-batches) the sum is
    divided by it, so gradient accumulation and data parallelism see the same loss scale as one big batch.
    """
    logits = logits.float()
    reduction = "sum" if num_items_in_batch is not None else "mean"
    if problem_type == MULTI_LABEL_PROBLEM:
        loss = nn.functional.binary_cross_entropy_with_logits(
            logits, labels.float(), pos_weight=weight, reduction=reduction
        )
    else:
        loss = nn.functional.cross_entropy(logits, labels, weight=weight, reduction=reduction)
    if num_items_in_batch is not None:
        loss = loss / torch.as_tensor(num_items_in_batch, device=loss.device, dtype=loss.dtype)
    return loss
