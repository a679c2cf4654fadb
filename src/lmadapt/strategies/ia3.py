"""`ia3`: learned rescaling of keys, values and feed-forward activations (Liu et al. 2022), through peft."""

from __future__ import annotations

import json
from dataclasses import dataclass

from lmadapt.config import option, require_choice
from lmadapt.models.contract import StrategyContext
from lmadapt.models.peft_models import peft_prepare
from lmadapt.models.pooled import POOLINGS
from lmadapt.models.saved import PEFT_ADAPTER
from lmadapt.strategies.base import Strategy
from lmadapt.strategies.space import trainer_space


@dataclass
class Ia3StrategyConfig:
    target_modules: list[str] | None = option(
        None,
        "Layers whose activations are rescaled; default: peft's choice for the architecture "
        "(keys, values and the feed-forward output for BERT; k_proj, v_proj, down_proj for Llama).",
    )
    feedforward_modules: list[str] | None = option(
        None,
        "Which of the target layers are feed-forward layers (rescaled on their input, not output); "
        "default: peft's choice for the architecture. Must be a subset of target_modules.",
    )
    modules_to_save: list[str] | None = option(
        None,
        "Backbone modules trained in full beside the rescaling vectors (the head always trains), e.g. [pooler].",
    )
    pooling: str = option(
        "mean",
        "What the head reads: mean (the mean of the last hidden states, as sentence encoders are trained "
        "to be read; measured on SST-2 validation with MiniLM at the default rate: 87.5% against 85.4% "
        "for native), last, cls, or native (the model's own sequence-classification head, e.g. BERT's "
        "pooler, which IA3 leaves frozen). "
        "Only native runs load with plain peft on AutoModelForSequenceClassification; the others need "
        "lmadapt's pooled classifier (lmadapt.models.pooled).",
    )

    def __post_init__(self) -> None:
        require_choice("strategy.pooling", self.pooling, ("native", *POOLINGS))


def _architecture_defaults(context: StrategyContext) -> tuple[list[str] | None, list[str] | None]:
    """peft's IA3 layers for the backbone's architecture. peft looks them up by the wrapped model's
    type, which for lmadapt's pooled classifier is not the backbone's, so they are looked up here."""
    from peft.utils import (
        TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD,
    )
    from peft.utils import (
        TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS,
    )

    config_file = context.backbone_path / "config.json" if context.backbone_path else None
    if config_file is None or not config_file.is_file():
        return None, None
    model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    return TARGETS.get(model_type), FEEDFORWARD.get(model_type)


def peft_config(config: Ia3StrategyConfig, context: StrategyContext):
    from peft import IA3Config, TaskType

    targets, feedforward = config.target_modules, config.feedforward_modules
    if config.pooling != "native" and targets is None:
        targets, default_feedforward = _architecture_defaults(context)
        feedforward = feedforward if feedforward is not None else default_feedforward
    return IA3Config(
        task_type=TaskType.SEQ_CLS,
        target_modules=targets,
        feedforward_modules=feedforward,
        modules_to_save=config.modules_to_save,
    )


STRATEGY = Strategy(
    name="ia3",
    summary="learned rescaling vectors on keys, values and feed-forward activations, and a new head (peft)",
    config_class=Ia3StrategyConfig,
    default_learning_rate=3e-2,
    prepare=peft_prepare(peft_config),
    artifact=PEFT_ADAPTER,
    search_space=trainer_space((3e-3, 1e-1), head_rate=True),
)
