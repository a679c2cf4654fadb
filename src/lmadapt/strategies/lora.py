"""`lora`: low-rank updates to the backbone's linear layers (Hu et al. 2021), through peft."""

from __future__ import annotations

from dataclasses import dataclass

from lmadapt.config import option, require_choice, require_positive
from lmadapt.models.contract import StrategyContext
from lmadapt.models.peft_models import peft_prepare
from lmadapt.models.saved import PEFT_ADAPTER
from lmadapt.strategies.base import Strategy
from lmadapt.strategies.space import Choice, trainer_space

BIAS_CHOICES = ("none", "lora_only", "all")


@dataclass
class LoraStrategyConfig:
    r: int = option(8, "Rank of the low-rank update matrices.")
    alpha: float = option(16.0, "Scale numerator: updates are multiplied by alpha / r (alpha / sqrt(r) with rslora).")
    dropout: float = option(
        0.0,
        "Dropout on the input of each low-rank branch. 0 (peft's default) keeps training memory below full "
        "fine-tuning's: measured on SST-2, 0.1 copied every adapted layer's input and peaked 15% above it.",
    )
    target_modules: list[str] | None = option(
        None,
        "Names (or name suffixes) of the linear layers to adapt, e.g. [query, value]; default: every linear "
        "layer of the backbone ('all-linear'), which small encoders need to come close to full fine-tuning.",
    )
    use_rslora: bool = option(False, "Rank-stabilised scaling alpha / sqrt(r), steadier at high ranks.")
    bias: str = option("none", "Biases that also train: none, lora_only (of adapted layers) or all.")

    def __post_init__(self) -> None:
        require_positive(self.r, "strategy.r")
        require_choice("strategy.bias", self.bias, BIAS_CHOICES)


def peft_config(config: LoraStrategyConfig, context: StrategyContext):
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=config.target_modules or "all-linear",
        use_rslora=config.use_rslora,
        bias=config.bias,
    )


STRATEGY = Strategy(
    name="lora",
    summary="low-rank adapters on the backbone's linear layers, and a new head (peft)",
    config_class=LoraStrategyConfig,
    default_learning_rate=1e-3,
    learning_rate_many_classes=2e-3,  # Banking77: 88.87 at 1e-3, 89.78 at 2e-3 ...
    head_learning_rate_many_classes=1e-2,  # ... and 92.77 with the head at 1e-2 (bench/tune.py)
    prepare=peft_prepare(peft_config),
    artifact=PEFT_ADAPTER,
    search_space={
        **trainer_space((1e-4, 1e-2), head_rate=True),
        "strategy.r": Choice((4, 8, 16, 32)),
        "strategy.alpha": Choice((8.0, 16.0, 32.0)),
        # target_modules stays the default (every linear layer): layer names differ between architectures.
    },
)
