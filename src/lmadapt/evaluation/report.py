"""Evaluate a finished run on a labelled file: metrics.json and plots in an output folder."""

from __future__ import annotations

import json
from pathlib import Path

from lmadapt.config import DataConfig
from lmadapt.data.loading import read_table
from lmadapt.data.prepare import check_known_labels, extract_split
from lmadapt.data.split import Split
from lmadapt.errors import LmadaptError
from lmadapt.evaluation.abstention import abstention_report, plot_abstention, read_split
from lmadapt.evaluation.metrics import classification_metrics
from lmadapt.evaluation.plots import write_metric_plots
from lmadapt.inference.scores import scores_from_logits
from lmadapt.runs import Run, check_output_path, write_text_atomic

# Data errors name the training config's data keys in their fix; what evaluate and predict offer instead.
COMMAND_FIXES = {
    "data.text_column": "name the file's text column with --text-column NAME",
    "data.label_column": "name the file's label column with --label-column NAME",
    "data.text_pair_column": "the run reads text pairs: give the file the text pair column it was trained with",
    "data.format": "give the file a .csv, .tsv, .jsonl or .parquet name",
    "data.drop_empty": "fill or remove those rows",
    "data.task": "this run gives one label per text: give it one label per row",
}


def read_run_data(source: str, config: DataConfig, *, with_labels: bool) -> Split:
    """The checked rows of `source` (the table read is `split.source`), with errors whose fix names the
    options of evaluate and predict instead of config keys these commands cannot set."""
    try:
        return extract_split(read_table(source, config.format), config, with_labels=with_labels)
    except LmadaptError as error:
        key = next((key for key in COMMAND_FIXES if key in (error.fix or "")), None)
        if key is None:
            raise
        raise LmadaptError(error.what, where=error.where, fix=COMMAND_FIXES[key]) from None


def evaluate_run(run: Run, data: str, output: str | Path | None = None, progress: bool = False, **columns) -> dict:
    """Accuracy, macro-F1, per-class scores and a confusion matrix PNG for `run` on `data`. For a run with
    out-of-scope detection, these are of the in-scope rows, and `ood` holds the abstention figures (with PNGs) over
    all rows, rows labelled with one of the run's out-of-scope labels or its abstain label being out of scope."""
    default = Path("evaluations") / f"{run.name}-{Path(str(data)).stem.replace(':', '_')}"
    folder = Path(output) if output else default
    check_output_path(folder, folder=True, example=default.name)
    config = run.data_config(format="auto", **columns)
    split = read_run_data(data, config, with_labels=True)
    run.check_reads(split.texts, where=str(data))
    predictor, labels = run.predictor, run.labels
    title = f"{run.name} on {Path(str(data)).name}"
    if predictor.ood is None:
        check_known_labels(split, labels, "evaluation")
        scores = predictor.scores(split.texts, split.pairs, progress=progress)
        metrics = classification_metrics(labels.encode(split.labels), scores, labels, labels.threshold)
    else:  # rows labelled out of scope (the run's out-of-scope labels, or its abstain label) measure abstention
        out_of_scope = [*predictor.ood.out_of_scope_labels, predictor.ood.abstain_label]
        check_known_labels(split, labels, "evaluation", out_of_scope)
        readings = read_split(predictor, split, predictor.ood, out_of_scope, progress=progress)
        inside = ~readings.is_ood
        scores = scores_from_logits(readings.logits[inside], labels.task)
        metrics = classification_metrics(readings.true_ids[inside], scores, labels, labels.threshold)
        metrics["ood"] = abstention_report(readings)
    metrics["data"] = str(data)
    metrics["run"] = str(run.path)
    folder.mkdir(parents=True, exist_ok=True)
    if predictor.ood is not None:
        plot_abstention(readings, folder, title)
    write_text_atomic(folder / "metrics.json", json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    write_metric_plots(folder, metrics, labels, title)
    metrics["output"] = str(folder)
    return metrics
