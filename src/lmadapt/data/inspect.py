"""`lmadapt data inspect`, what the texts alone tell: label counts, scripts, duplicates and leaks, before any
training. Token lengths and unknown tokens come from backbones' tokenizers (lmadapt.models.inspect)."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable

import numpy as np

from lmadapt.config import DataConfig
from lmadapt.data.labels import MULTI_LABEL, LabelMap
from lmadapt.data.loading import read_table
from lmadapt.data.prepare import extract_split, leaked_positions, load_split, row_key
from lmadapt.data.scripts import sample_texts, script_mix
from lmadapt.data.split import Split
from lmadapt.data.table import Table
from lmadapt.errors import LmadaptError

# The report's part on the texts (all of them, and a seeded sample) that needs a tokenizer.
TextMeasure = Callable[[list[str], list[str]], dict]


def _duplicates(split: Split) -> tuple[int, int]:
    """Rows repeating an earlier row, and rows that appear with different labels."""
    labels_of: dict[str, set] = defaultdict(set)
    repeats = 0
    for i, label in enumerate(split.labels):
        key = row_key(split, i)
        repeats += key in labels_of
        labels_of[key].add(tuple(label) if isinstance(label, list) else label)
    conflicting = sum(1 for found in labels_of.values() if len(found) > 1)
    return repeats, conflicting


def _require_columns(table: Table, config: DataConfig) -> None:
    """The text and label columns, named by the options of `lmadapt data inspect` that set them."""
    wanted = {"--text-column": config.text_column, "--label-column": config.label_column}
    missing = {option: column for option, column in wanted.items() if column not in table.frame.columns}
    if missing:
        raise LmadaptError(
            f"column{'s' if len(missing) > 1 else ''} {', '.join(repr(column) for column in missing.values())} "
            f"not found; the data has columns: {', '.join(map(str, table.frame.columns))}",
            where=table.source,
            fix=f"name the file's own columns with {' and '.join(f'{option} NAME' for option in missing)}",
        )


def inspect_source(source: str, config: DataConfig, measure: TextMeasure, against: list[str] | tuple = ()) -> dict:
    """A report on one data source (and its overlap with others) as a plain dict; `measure` adds what
    tokenizers tell of its texts."""
    table = read_table(source, config.format)
    _require_columns(table, config)
    lenient = dataclasses.replace(config, drop_empty=True)
    split = extract_split(table, lenient)
    if not len(split):
        raise LmadaptError(
            f"every text in column '{config.text_column}' is empty", where=source, fix="check --text-column"
        )
    report: dict = {
        "source": source,
        "rows": len(table.frame),
        "columns": [str(c) for c in table.frame.columns],
        "empty_texts": len(table.frame) - len(split),
    }
    labels = LabelMap.from_rows(split.labels, config.task)
    counts = labels.counts(split.labels)
    report["labels"] = counts
    report["classes"] = len(counts)
    if config.task == MULTI_LABEL:
        report["labels_per_text_mean"] = round(float(np.mean([len(row) for row in split.labels])), 3)
        report["texts_without_labels"] = sum(1 for row in split.labels if not row)
    else:
        report["imbalance_ratio"] = round(max(counts.values()) / max(min(counts.values()), 1), 2)
    sample = sample_texts(split.texts)
    report["scripts"] = script_mix(sample)
    report |= measure(split.texts, sample)
    report["duplicates"], report["conflicting_labels"] = _duplicates(split)
    report["leaks"] = {
        other: len(leaked_positions(split, load_split(other, lenient, with_labels=False))) for other in against
    }
    return report
