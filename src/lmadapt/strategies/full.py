"""`full`: full fine-tuning, every backbone weight and the new head train."""

from __future__ import annotations

from dataclasses import dataclass

from lmadapt.config import option
from lmadapt.models.classifier import load_classifier
from lmadapt.models.contract import PreparedModel, StrategyContext
from lmadapt.strategies.base import Strategy
from lmadapt.strategies.space import trainer_space


@dataclass
class FullConfig:
    freeze_embeddings: bool = option(
        False, "Keep the token embeddings frozen (saves optimiser memory on large vocabularies)."
    )


def prepare(context: StrategyContext, config: FullConfig) -> PreparedModel:
    model, tokenizer = load_classifier(context)
    if config.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    return PreparedModel(model, tokenizer)


STRATEGY = Strategy(
    name="full",
    summary="full fine-tuning of the backbone and a new classification head",
    config_class=FullConfig,
    default_learning_rate=1e-4,
    learning_rate_many_classes=2e-4,  # Banking77: 91.9 at 1e-4, 92.4 at 2e-4 (bench/tune.py)
    default_warmup_ratio=0.0,  # measured on SST-2 over 3 seeds: 10% warm-up cost up to 3 points
    prepare=prepare,
    search_space=trainer_space((1e-5, 3e-4), warmup=(0.0, 0.1)),
)
