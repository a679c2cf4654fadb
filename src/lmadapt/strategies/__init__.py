"""The strategy registry: adding a strategy is one module here and one line below."""

from __future__ import annotations

from lmadapt.config import STRATEGY_NAMES
from lmadapt.errors import LmadaptError, did_you_mean
from lmadapt.strategies import (
    adapter,
    bitfit,
    full,
    head,
    ia3,
    incontext,
    lora,
    prefix,
    prompt_finetune,
    prompt_tuning,
    scratch,
    setfit,
    zeroshot_embed,
    zeroshot_lm,
)
from lmadapt.strategies.base import Strategy

STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        scratch.STRATEGY,
        head.STRATEGY,
        full.STRATEGY,
        lora.STRATEGY,
        adapter.STRATEGY,
        prefix.STRATEGY,
        prompt_tuning.STRATEGY,
        ia3.STRATEGY,
        bitfit.STRATEGY,
        zeroshot_lm.STRATEGY,
        zeroshot_embed.STRATEGY,
        incontext.STRATEGY,
        prompt_finetune.STRATEGY,
        setfit.STRATEGY,
    )
}
STRATEGY_NAMES.update({s.config_class: s.name for s in STRATEGIES.values()})  # RunConfig.strategy_name reads it


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise LmadaptError(
            f"unknown strategy '{name}'", where="strategy.name", fix=did_you_mean(name, list(STRATEGIES))
        )
    return STRATEGIES[name]


__all__ = ["STRATEGIES", "Strategy", "get_strategy"]
