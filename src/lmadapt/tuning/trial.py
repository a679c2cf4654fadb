"""One trial of a search: a config (a raw mapping) and the trial's values in, its figures out.

`run_trial` depends on nothing but its arguments and a folder of its own, so it can run anywhere (another process,
a Ray task): the search hands it `RunConfig.to_dict()` and the values Optuna suggested, and reads back the figures.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from lmadapt.config import apply_overrides
from lmadapt.recipe import parse_config
from lmadapt.training.engine import train

OBJECTIVE = "macro_f1"  # of the validation split: the search never reads test


def as_overrides(values: Mapping[str, Any]) -> list[str]:
    """A trial's values as `--set` items (None: an empty key)."""
    return [f"{key}={'null' if value is None else value}" for key, value in values.items()]


def trial_config(raw: Mapping[str, Any], values: Mapping[str, Any]):
    """The checked RunConfig of `raw` with a trial's values applied as `--set` overrides."""
    return parse_config(apply_overrides(dict(raw), as_overrides(values)))


class EpochReports(TrainerCallback):
    """After each validation pass (once per epoch), hands its macro-F1 and the epoch to `report(value, epoch)`,
    which may stop the training by raising (optuna.TrialPruned, raised when the pruner says so)."""

    def __init__(self, report):
        self.report = report

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and f"eval_{OBJECTIVE}" in metrics:
            self.report(float(metrics[f"eval_{OBJECTIVE}"]), round(state.epoch or 0))


def run_trial(raw: Mapping[str, Any], values: Mapping[str, Any], folder: Path, callbacks=()) -> dict[str, Any]:
    """Train `raw` with `values` into `folder` (a scratch folder of this trial's) and return its figures: the
    score (validation macro-F1), the validation and test metrics, the training rows and the seconds it took. The
    folder is deleted afterwards, also when the trial is stopped or fails: nothing half-written stays."""
    started = time.perf_counter()
    config = trial_config({**raw, "output_dir": str(folder)}, values)
    try:
        run = train(config, callbacks=callbacks)
        metrics = run.metrics
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "score": metrics["validation"][OBJECTIVE],
        "validation": metrics["validation"],
        "test": metrics["test"],
        "train_rows": metrics["data"]["rows"]["train"],
        "seconds": round(time.perf_counter() - started, 2),
    }
