"""`prompt_tuning`: a trained soft prompt before the input embeddings (Lester et al. 2021), through peft."""

from __future__ import annotations

from dataclasses import dataclass

from lmadapt.config import option, require_choice, require_positive
from lmadapt.errors import LmadaptError
from lmadapt.models.contract import StrategyContext
from lmadapt.models.peft_models import peft_prepare
from lmadapt.models.saved import PEFT_ADAPTER
from lmadapt.strategies.base import Strategy
from lmadapt.strategies.space import IntRange, trainer_space

INITIALISATIONS = ("sample_vocab", "random", "text")


@dataclass
class PromptTuningStrategyConfig:
    num_virtual_tokens: int = option(20, "Length of the soft prompt, in virtual tokens.")
    init: str = option(
        "sample_vocab",
        "How the prompt starts: sample_vocab (embeddings of random vocabulary tokens: the right scale), "
        "random, or text (the embeddings of init_text, e.g. a task description).",
    )
    init_text: str | None = option(None, "Text whose token embeddings start the prompt (with init=text).")

    def __post_init__(self) -> None:
        require_positive(self.num_virtual_tokens, "strategy.num_virtual_tokens")
        require_choice("strategy.init", self.init, INITIALISATIONS)
        if self.init == "text" and not (self.init_text or "").strip():
            raise LmadaptError(
                "init=text needs init_text",
                where="strategy.init_text",
                fix="e.g. --set strategy.init_text='Is this review positive?'",
            )


def peft_config(config: PromptTuningStrategyConfig, context: StrategyContext):
    from peft import PromptTuningConfig, PromptTuningInit, TaskType

    return PromptTuningConfig(
        task_type=TaskType.SEQ_CLS,
        num_virtual_tokens=config.num_virtual_tokens,
        prompt_tuning_init=PromptTuningInit[config.init.upper()],
        prompt_tuning_init_text=config.init_text if config.init == "text" else None,
        tokenizer_name_or_path=str(context.backbone_path) if config.init == "text" else None,
    )


STRATEGY = Strategy(
    name="prompt_tuning",
    summary="a trained soft prompt before the input, and a new head (peft)",
    config_class=PromptTuningStrategyConfig,
    default_learning_rate=3e-2,
    prepare=peft_prepare(peft_config),
    artifact=PEFT_ADAPTER,
    search_space={
        **trainer_space((3e-3, 1e-1), head_rate=True),
        "strategy.num_virtual_tokens": IntRange(5, 40, step=5),
    },
)
