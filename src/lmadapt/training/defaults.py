"""Training settings derived from the data and the strategy, for a config that leaves them empty.

A user who never tunes should land close to a tuned recipe. The rules (measured: bench/RESULTS.md, "Defaults from
the data"; bench/tune.py) fill in:

- epochs: about STEP_BUDGET optimiser steps (the hand-tuned recipes' budget: SST-2's 2 epochs of 20,000 rows,
  Banking77's 5 of 9,000 at batch 32), between 1 and MAX_EPOCHS epochs; early stopping ends a run sooner;
- learning rate: the strategy's default on two classes, rising with log(classes) to its measured rate over many
  classes (a fresh head over 77 intents needs larger steps than one over two);
- the head's own rate: likewise, from the rest's rate on two classes to its measured rate over many classes.

A value the config sets is kept; what was derived, and why, is returned for the run's metrics."""

from __future__ import annotations

import dataclasses
import math

from lmadapt.config import RunConfig, TrainConfig
from lmadapt.strategies import Strategy

STEP_BUDGET = 1300
MAX_EPOCHS = 10
MANY_CLASSES = 77  # Banking77, the dataset the rates over many classes were measured on


def class_scaled(two_classes: float, many_classes: float, classes: int) -> float:
    """The rate for `classes` classes, geometric between the rate on two classes and the rate over many."""
    share = min(1.0, max(0.0, math.log(max(classes, 2) / 2) / math.log(MANY_CLASSES / 2)))
    return float(f"{two_classes * (many_classes / two_classes) ** share:.2g}")


def warmup_ratio(train: TrainConfig, strategy: Strategy) -> float:
    """The warm-up share training uses: the config's, else the strategy's default."""
    return strategy.default_warmup_ratio if train.warmup_ratio is None else train.warmup_ratio


def derived_epochs(rows: int, batch_size: int, accumulation: int) -> int:
    steps_per_epoch = math.ceil(rows / (batch_size * accumulation))
    return min(MAX_EPOCHS, max(1, round(STEP_BUDGET / steps_per_epoch)))


def derived_settings(strategy: Strategy, config: RunConfig, classes: int, rows: int) -> dict[str, dict]:
    """{train key: {"value": ..., "rule": why}} for each of epochs, learning rate and head rate the config leaves
    empty and a rule covers."""
    train, derived = config.train, {}
    if train.epochs is None:
        if strategy.uses_trainer:
            epochs = derived_epochs(rows, train.batch_size, train.gradient_accumulation_steps)
            rule = (
                f"about {STEP_BUDGET} optimiser steps over {rows} rows at batch {train.batch_size}, 1 to {MAX_EPOCHS}"
            )
        else:
            epochs, rule = strategy.default_epochs, f"the {strategy.name} strategy's default"
        derived["epochs"] = {"value": epochs, "rule": rule}
    many = strategy.learning_rate_many_classes
    if train.learning_rate is None and many is not None:
        rate = class_scaled(strategy.default_learning_rate, many, classes)
        rule = f"{strategy.default_learning_rate:g} on 2 classes to {many:g} on {MANY_CLASSES}+, here {classes}"
        derived["learning_rate"] = {"value": rate, "rule": rule}
    head_many = strategy.head_learning_rate_many_classes
    if train.head_learning_rate is None and head_many is not None:
        low = train.learning_rate or strategy.default_learning_rate
        rate = class_scaled(low, head_many, classes)
        rule = f"{low:g} (the rest's rate) on 2 classes to {head_many:g} on {MANY_CLASSES}+, here {classes}"
        derived["head_learning_rate"] = {"value": rate, "rule": rule}
    return derived


def with_derived_defaults(config: RunConfig, strategy: Strategy, classes: int, rows: int) -> tuple[RunConfig, dict]:
    """`config` with the derived settings filled in, and what was derived (see derived_settings)."""
    derived = derived_settings(strategy, config, classes, rows)
    train = dataclasses.replace(config.train, **{key: found["value"] for key, found in derived.items()})
    return dataclasses.replace(config, train=train), derived
