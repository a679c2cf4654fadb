"""`bitfit`: only the backbone's bias terms and the head train (Ben Zaken et al. 2022)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmadapt.config import option
from lmadapt.errors import LmadaptError
from lmadapt.models.classifier import head_parameter_names, load_classifier, train_only
from lmadapt.models.contract import PreparedModel, StrategyContext
from lmadapt.models.saved import TRAINED_TENSORS
from lmadapt.strategies.base import Strategy
from lmadapt.strategies.space import trainer_space


@dataclass
class BitFitConfig:
    add_missing_biases: bool = option(
        True,
        "Give the backbone's bias-free linear layers (all of them in Llama-like models) zero-initialised "
        "biases to train, so BitFit adapts such models too; the model starts out unchanged.",
    )


def add_zero_biases(model) -> int:
    """A zero bias for every bias-free linear layer of the backbone; returns how many were added."""
    prefix = model.base_model_prefix + "."
    added = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.bias is None and name.startswith(prefix):
            module.bias = nn.Parameter(
                torch.zeros(module.out_features, dtype=module.weight.dtype, device=module.weight.device)
            )
            added += 1
    return added


def prepare(context: StrategyContext, config: BitFitConfig) -> PreparedModel:
    model, tokenizer = load_classifier(context)
    if config.add_missing_biases:
        add_zero_biases(model)
    head = set(head_parameter_names(model))
    biases = {name for name, _ in model.named_parameters() if name.endswith(".bias") and name not in head}
    if not biases:
        raise LmadaptError(
            "this backbone has no bias terms, so BitFit would train only the head",
            where="strategy.add_missing_biases",
            fix="set strategy.add_missing_biases=true, or use the head, lora or ia3 strategy",
        )
    train_only(model, biases | head)
    return PreparedModel(model, tokenizer)


STRATEGY = Strategy(
    name="bitfit",
    summary="only the backbone's bias terms and a new head train (BitFit)",
    config_class=BitFitConfig,
    default_learning_rate=5e-3,
    prepare=prepare,
    artifact=TRAINED_TENSORS,
    search_space=trainer_space((5e-4, 3e-2), head_rate=True),
)
