"""Evaluate a finished run on a labelled file: metrics.json and plots in an output folder."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from lmadapt.config import DataConfig, build_dataclass
from lmadapt.data.prepare import check_known_labels, load_split
from lmadapt.evaluation.metrics import classification_metrics
from lmadapt.evaluation.plots import write_metric_plots
from lmadapt.runs import Run, write_text_atomic


def run_data_config(run: Run, **overrides) -> DataConfig:
    """The run's own data settings (columns, task, cleaning), with any given overrides."""
    known = {f.name for f in dataclasses.fields(DataConfig)}
    saved = {k: v for k, v in run.config.get("data", {}).items() if k in known}
    config = build_dataclass(DataConfig, saved, "data")
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


def evaluate_run(run: Run, data: str, output: str | Path | None = None, progress: bool = False, **columns) -> dict:
    """Accuracy, macro-F1, per-class scores and a confusion matrix PNG for `run` on `data`."""
    config = run_data_config(run, format="auto", **columns)
    split = load_split(data, config)
    check_known_labels(split, run.labels, "evaluation")
    scores = run.predictor.scores(split.texts, split.pairs, progress=progress)
    metrics = classification_metrics(run.labels.encode(split.labels), scores, run.labels, run.labels.threshold)
    metrics["data"] = str(data)
    metrics["run"] = str(run.path)
    default = Path("evaluations") / f"{run.name}-{Path(str(data)).stem.replace(':', '_')}"
    folder = Path(output) if output else default
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "metrics.json", json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    write_metric_plots(folder, metrics, run.labels, f"{run.name} on {Path(str(data)).name}")
    metrics["output"] = str(folder)
    return metrics
