"""`ia3`: learned rescaling of keys, values and feed-forward activations (Liu et al. 2022), through peft."""

from __future__ import annotations

from dataclasses import dataclass

from lmadapt.config import option
from lmadapt.models.peft_models import peft_prepare
from lmadapt.strategies.base import Strategy, StrategyContext


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


def peft_config(config: Ia3StrategyConfig, context: StrategyContext):
    from peft import IA3Config, TaskType

    return IA3Config(
        task_type=TaskType.SEQ_CLS,
        target_modules=config.target_modules,
        feedforward_modules=config.feedforward_modules,
    )


STRATEGY = Strategy(
    name="ia3",
    summary="learned rescaling vectors on keys, values and feed-forward activations, and a new head (peft)",
    config_class=Ia3StrategyConfig,
    default_learning_rate=1e-2,
    prepare=peft_prepare(peft_config),
    artifact="peft",
    mergeable=True,
)
