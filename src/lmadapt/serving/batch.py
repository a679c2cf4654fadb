"""Score a whole file: keep its columns, add the predicted label and a score per label."""

from __future__ import annotations

from pathlib import Path

from lmadapt.data.labels import MULTI_LABEL
from lmadapt.data.loading import FORMATS_BY_SUFFIX, read_table
from lmadapt.data.prepare import extract_split
from lmadapt.errors import LmadaptError
from lmadapt.evaluation.report import run_data_config
from lmadapt.runs import Run, write_file_atomic
from lmadapt.serving.predict import Predictor


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
            fix="end --output with .csv, .tsv, .jsonl or .parquet",
        )
    return writers[fmt]


def predict_file(
    run: Run, source: str, output: str | Path, text_column: str | None = None, predictor: Predictor | None = None
) -> int:
    """Write `source` with `predicted_label` (or `predicted_labels`) and `score_<label>` columns added
    (scored by `predictor`, default the run's PyTorch one)."""
    output = Path(output)
    write = _writer(output)
    if output.exists() and output.resolve() == Path(source).resolve():
        raise LmadaptError("--output would overwrite --input", fix="write to another file")
    config = run_data_config(run, text_column=text_column, format="auto")
    table = read_table(source, config.format)
    split = extract_split(table, config, with_labels=False)
    run.check_reads(split.texts, where=str(source))
    predictor = predictor or run.predictor
    scores = predictor.scores(split.texts, split.pairs, progress=True)
    frame = table.frame.copy()
    decided = predictor.decide(scores)
    # Rows the run's cleaning drops (empty texts, with data.drop_empty) keep empty prediction cells.
    if run.labels.task == MULTI_LABEL:
        frame.loc[split.rows, "predicted_labels"] = [config.label_delimiter.join(labels) for labels in decided]
    else:
        frame.loc[split.rows, "predicted_label"] = decided
    for j, label in enumerate(run.labels.labels):
        frame.loc[split.rows, f"score_{label}"] = scores[:, j].round(6)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(output, lambda partial: write(frame, partial))
    return len(frame)
