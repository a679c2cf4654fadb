"""`head`: transfer learning by feature extraction; the backbone stays frozen, only the head trains."""

from __future__ import annotations

from dataclasses import dataclass

from lmadapt.config import option, require_choice
from lmadapt.models.classifier import head_parameter_names, load_classifier, load_pooled_classifier, train_only
from lmadapt.models.contract import PreparedModel, StrategyContext
from lmadapt.models.pooled import POOLINGS
from lmadapt.models.saved import TRAINED_TENSORS
from lmadapt.strategies.base import Strategy
from lmadapt.strategies.space import Choice, trainer_space


@dataclass
class HeadConfig:
    pooling: str = option(
        "mean",
        "How the frozen backbone's states become features: mean (best for sentence encoders and, "
        "measured on SST-2, for SmolLM2 too), last (last token), cls (first token), or native (the "
        "model's own sequence-classification head, e.g. BERT's pooler).",
    )

    def __post_init__(self) -> None:
        require_choice("strategy.pooling", self.pooling, ("native", *POOLINGS))


def prepare(context: StrategyContext, config: HeadConfig) -> PreparedModel:
    if config.pooling == "native":
        model, tokenizer = load_classifier(context)
    else:
        model, tokenizer = load_pooled_classifier(context, config.pooling)
    train_only(model, set(head_parameter_names(model)))
    return PreparedModel(model, tokenizer)


STRATEGY = Strategy(
    name="head",
    summary="frozen backbone, only the classification head trains (feature extraction)",
    config_class=HeadConfig,
    default_learning_rate=2e-3,
    prepare=prepare,
    artifact=TRAINED_TENSORS,
    search_space={**trainer_space((2e-4, 2e-2)), "strategy.pooling": Choice(("mean", "cls"))},
)
