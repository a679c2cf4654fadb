"""`prefix`: prefix tuning (Li & Liang 2021; P-tuning v2), trained key/value vectors before every layer's input, through peft."""

from __future__ import annotations

from dataclasses import dataclass

from lmadapt.config import option, require_positive
from lmadapt.models.contract import StrategyContext
from lmadapt.models.peft_models import peft_prepare
from lmadapt.models.saved import PEFT_ADAPTER
from lmadapt.strategies.base import Strategy
from lmadapt.strategies.space import IntRange, trainer_space


@dataclass
class PrefixStrategyConfig:
    num_virtual_tokens: int = option(20, "Length of the trained prefix, in virtual tokens, at every layer.")
    prefix_projection: bool = option(
        False,
        "Reparametrise the prefix through a two-layer MLP (Li & Liang); P-tuning v2 found it unneeded "
        "for classification, and it adds many parameters.",
    )
    projection_hidden_size: int = option(128, "Hidden size of that MLP (with prefix_projection only).")

    def __post_init__(self) -> None:
        require_positive(self.num_virtual_tokens, "strategy.num_virtual_tokens")


def peft_config(config: PrefixStrategyConfig, context: StrategyContext):
    from peft import PrefixTuningConfig, TaskType

    return PrefixTuningConfig(
        task_type=TaskType.SEQ_CLS,
        num_virtual_tokens=config.num_virtual_tokens,
        prefix_projection=config.prefix_projection,
        encoder_hidden_size=config.projection_hidden_size,
    )


STRATEGY = Strategy(
    name="prefix",
    summary="trained key/value prefixes at every layer (prefix tuning / P-tuning v2), and a new head (peft)",
    config_class=PrefixStrategyConfig,
    default_learning_rate=1e-2,
    prepare=peft_prepare(peft_config),
    artifact=PEFT_ADAPTER,
    search_space={
        **trainer_space((1e-3, 5e-2), head_rate=True),
        "strategy.num_virtual_tokens": IntRange(5, 40, step=5),
    },
)
