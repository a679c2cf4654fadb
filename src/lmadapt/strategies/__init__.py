"""The strategy registry: adding a strategy is one module here and one line below."""

from __future__ import annotations

from typing import Any

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
from lmadapt.strategies.base import PreparedModel, Strategy, StrategyContext

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


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise LmadaptError(
            f"unknown strategy '{name}'", where="strategy.name", fix=did_you_mean(name, list(STRATEGIES))
        )
    return STRATEGIES[name]


def strategy_name_of(config: Any) -> str:
    for strategy in STRATEGIES.values():
        if type(config) is strategy.config_class:  # exact: one config class may extend another
            return strategy.name
    raise TypeError(f"{type(config).__name__} is not a registered strategy config")


__all__ = ["STRATEGIES", "PreparedModel", "Strategy", "StrategyContext", "get_strategy", "strategy_name_of"]
