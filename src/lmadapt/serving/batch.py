"""Score a whole file: keep its columns, add the predicted label and a score per label."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lmadapt.data.labels import MULTI_LABEL
from lmadapt.data.loading import FORMATS_BY_SUFFIX
from lmadapt.data.split import Split
from lmadapt.errors import LmadaptError
from lmadapt.evaluation.report import read_run_data
from lmadapt.inference.predictor import Predictor
from lmadapt.runs import Run, check_output_path, write_file_atomic


def _writer(output: Path):
    fmt = FORMATS_BY_SUFFIX.get(output.suffix.lower())
    writers = {
        "csv": lambda frame, path: frame.to_csv(path, index=False),
        "tsv": lambda frame, path: frame.to_csv(path, index=False, sep="\t"),
        "jsonl": lambda frame, path: frame.to_json(path, orient="records", lines=True, force_ascii=False),
        "parquet": lambda frame, path: frame.to_parquet(path, index=False),
    }
    if fmt not in writers:
        raise LmadaptError(
            f"cannot tell the output format from '{output.name}'",
            where=str(output),
            fix="end --output with .csv, .tsv, .jsonl or .parquet",
        )
    return writers[fmt]


def check_scored_output(source: str, output: Path):
    """The writer of the scored file, once `output` is known to be writable in a format and not to be `source`."""
    check_output_path(output, folder=False, example="scored.csv")
    write = _writer(output)
    if output.exists() and output.resolve() == Path(source).resolve():
        raise LmadaptError(
            "--output would overwrite --input",
            where=str(output),
            fix=f"write to another file, e.g. --output {output.with_stem(output.stem + '-scored')}",
        )
    return write


def scored_frame(
    run: Run, split: Split, predictor: Predictor, abstain: bool = True, progress: bool = False, where: str = ""
) -> pd.DataFrame:
    """`split`'s table with `predicted_label` (or `predicted_labels`) and `score_<label>` columns added (scored by
    `predictor`); a run with out-of-scope detection adds `abstained` and `ood_score` (and answers its abstain label
    where it abstains, unless `abstain` is false). Texts the run cannot read are refused, naming `where`."""
    run.check_reads(split.texts, where=where)
    config = run.data_config()
    predictions = predictor.predictions(split.texts, split.pairs, progress=progress, abstain=abstain)
    scores = predictions.scores
    if run.labels.task == MULTI_LABEL:
        predicted = {"predicted_labels": [config.label_delimiter.join(labels) for labels in predictions.labels]}
    else:
        predicted = {"predicted_label": predictions.labels}
    if predictions.ood_scores is not None:
        predicted |= {
            "abstained": [reason is not None for reason in predictions.reasons],
            "ood_score": predictions.ood_scores.round(6),
        }
    scored = {f"score_{label}": scores[:, j].round(6) for j, label in enumerate(run.labels.labels)}
    # All columns at once: one at a time, pandas warns of a fragmented frame for runs of many labels.
    added = pd.DataFrame({**predicted, **scored}, index=split.rows)
    # Rows the run's cleaning drops (empty texts, with data.drop_empty) keep empty prediction cells;
    # columns of an earlier scoring of the same file are replaced.
    return split.source.frame.drop(columns=added.columns, errors="ignore").join(added)


def predict_file(
    run: Run,
    source: str,
    output: str | Path,
    text_column: str | None = None,
    predictor: Predictor | None = None,
    abstain: bool = True,
) -> int:
    """Write `source` scored as `scored_frame` says (by `predictor`, default the run's PyTorch one)."""
    output = Path(output)
    write = check_scored_output(source, output)
    config = run.data_config(text_column=text_column, format="auto")
    split = read_run_data(source, config, with_labels=False)
    frame = scored_frame(run, split, predictor or run.predictor, abstain, progress=True, where=str(source))
    output.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(output, lambda partial: write(frame, partial))
    return len(frame)
