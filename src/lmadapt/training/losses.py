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


def _overlap(current: torch.Tensor, anchored: torch.Tensor) -> torch.Tensor:
    """The part of a parameter that existed at the anchor: a grown head keeps its old rows first."""
    return current[: anchored.shape[0]] if current.shape != anchored.shape else current


def ewc_penalty(model, anchor: dict[str, torch.Tensor], fisher: dict[str, torch.Tensor], strength: float):
    """Elastic weight consolidation (Kirkpatrick et al. 2017): strength / 2 * sum F * (theta - theta*)^2
    over the parameters that have an anchor; zero at the anchor."""
    total = None
    for name, parameter in model.named_parameters():
        if name in anchor:
            term = (fisher[name] * (_overlap(parameter, anchor[name]) - anchor[name]).pow(2)).sum()
            total = term if total is None else total + term
    return 0.5 * strength * total if total is not None else torch.zeros(())


def diagonal_fisher(model, batches, parameter_names: set[str]) -> dict[str, torch.Tensor]:
    """Empirical Fisher information, diagonal: the mean over examples of each squared log-likelihood gradient.

    `batches` yields one example each (as model inputs with `labels`), so each square is a single
    example's, as the definition asks, not a batch mean's.
    """
    parameters = {name: p for name, p in model.named_parameters() if name in parameter_names}
    fisher = {name: torch.zeros_like(p) for name, p in parameters.items()}
    was_training = model.training
    model.eval()  # no dropout: the gradients of the model as it predicts
    count = 0
    for batch in batches:
        model.zero_grad(set_to_none=True)
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        torch.nn.functional.cross_entropy(logits.float(), batch["labels"]).backward()
        for name, parameter in parameters.items():
            if parameter.grad is not None:
                fisher[name] += parameter.grad.detach().pow(2)
        count += 1
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {name: value / max(count, 1) for name, value in fisher.items()}


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float):
    """Learning without forgetting (Li & Hoiem 2017): KL(teacher || student) over the teacher's labels at
    `temperature`, scaled by temperature^2 so its gradients keep their size (Hinton et al. 2015)."""
    known = teacher_logits.shape[-1]
    student = torch.nn.functional.log_softmax(student_logits[..., :known].float() / temperature, dim=-1)
    teacher = torch.nn.functional.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = torch.nn.functional.kl_div(student, teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2
