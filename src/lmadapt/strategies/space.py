"""Search spaces for `lmadapt tune`, declared beside each strategy as plain data (Optuna is not imported here).

A search space maps config keys, dotted as `--set` takes them (`train.learning_rate`, `strategy.r`), to what a trial
may give them: a FloatRange, an IntRange or a Choice. `lmadapt tune` turns each into Optuna's suggest_float,
suggest_int or suggest_categorical, and applies a trial's values to the config as `--set` overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FloatRange:
    """A real value from `low` to `high` (both included); `log`: drawn evenly on a log scale, each decade as likely
    as the next (learning rates)."""

    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class IntRange:
    """A whole number from `low` to `high` (both included) in steps of `step`; `log`: drawn on a log scale (then
    `step` must be 1)."""

    low: int
    high: int
    step: int = 1
    log: bool = False


@dataclass(frozen=True)
class Choice:
    """One of `options`: None, true/false, numbers or text. A list-valued key takes comma-separated text, as
    `--set` does (e.g. 'query,value'); None leaves the key empty (the config's meaning of empty, e.g. the
    strategy's default)."""

    options: tuple[Any, ...]


Dimension = FloatRange | IntRange | Choice
SearchSpace = Mapping[str, Dimension]

# The new head's own rate, or None for the same rate as the rest: a fresh head over many classes learns faster at a
# higher rate than a small adapter below it; on two classes it rarely matters, and None keeps that option open.
HEAD_LEARNING_RATES = Choice((None, 3e-3, 1e-2, 3e-2))


def trainer_space(
    learning_rate: tuple[float, float],
    *,
    head_rate: bool = False,
    warmup: tuple[float, float] = (0.0, 0.2),
    epochs: tuple[int, int] = (2, 5),
    batch_sizes: tuple[int, ...] = (16, 32, 64),
) -> dict[str, Dimension]:
    """The training keys a strategy trained by the shared Trainer loop searches: its learning rate (log range),
    optionally the head's own rate, warm-up share, epochs and batch size."""
    space: dict[str, Dimension] = {"train.learning_rate": FloatRange(*learning_rate, log=True)}
    if head_rate:
        space["train.head_learning_rate"] = HEAD_LEARNING_RATES
    space["train.warmup_ratio"] = FloatRange(*warmup)
    space["train.epochs"] = IntRange(*epochs)
    space["train.batch_size"] = Choice(batch_sizes)
    return space
