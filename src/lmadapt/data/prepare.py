"""From raw sources to checked, cleaned, split data: validation, cleaning, leakage, splits, label map."""

from __future__ import annotations

import dataclasses
import logging
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from lmadapt.config import DataConfig, OodConfig
from lmadapt.data.kshot import k_shot
from lmadapt.data.labels import MULTI_LABEL, LabelMap, nan_as_missing
from lmadapt.data.loading import read_table
from lmadapt.data.split import Split, concat_splits
from lmadapt.data.table import Table
from lmadapt.errors import LmadaptError, nearest

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    train: Split
    validation: Split
    test: Split
    labels: LabelMap
    report: dict
    # Labels whose rows are out of scope (ood.label, or the labels ood.holdout_share held out), and those rows of
    # validation and test when they are not a trained class: `validation` and `test` then hold in-scope rows only.
    out_of_scope: list[str] = dataclasses.field(default_factory=list)
    out_of_scope_rows: dict[str, Split] = dataclasses.field(default_factory=dict)

    def with_out_of_scope(self, name: str) -> Split:
        """The validation or test split with its out-of-scope rows after the in-scope ones."""
        split = getattr(self, name)
        return concat_splits([split, self.out_of_scope_rows[name]]) if name in self.out_of_scope_rows else split


def normalize_text(text: str) -> str:
    """Unicode NFKC and collapsed whitespace: the same sentence always looks the same."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _require_column(table: Table, column: str, key: str) -> None:
    if column not in table.frame.columns:
        found = ", ".join(map(str, table.frame.columns))
        raise LmadaptError(
            f"column '{column}' not found; the data has columns: {found}",
            where=table.source,
            fix=f"set data.{key} to one of them (e.g. --set data.{key}=...)",
        )


def _texts(table: Table, column: str, key: str, config: DataConfig) -> tuple[list[str], list[int]]:
    """Checked texts of one column, and the row labels kept (empty texts may be dropped)."""
    _require_column(table, column, key)
    values = table.frame[column]
    not_text = [i for i, v in zip(values.index, values) if v is not None and not pd.isna(v) and not isinstance(v, str)]
    if not_text:
        raise LmadaptError(
            f"column '{column}' holds values that are not text (e.g. {values[not_text[0]]!r})",
            where=table.where_rows(not_text),
            fix=f"check that data.{key} names the text column",
        )
    cleaned = [
        normalize_text(v) if isinstance(v, str) and config.normalize_unicode else (v if isinstance(v, str) else "")
        for v in values
    ]
    empty = [i for i, text in zip(values.index, cleaned) if not text.strip()]
    if empty and not config.drop_empty:
        raise LmadaptError(
            f"{len(empty)} empty text(s) in column '{column}'",
            where=table.where_rows(empty),
            fix="fill or remove those rows, or set data.drop_empty=true to drop them",
        )
    keep = [i for i, text in zip(values.index, cleaned) if text.strip()]
    by_row = dict(zip(values.index, cleaned))
    return [by_row[i] for i in keep], keep


def _labels(table: Table, rows: list[int], config: DataConfig) -> list:
    _require_column(table, config.label_column, "label_column")
    values = nan_as_missing(table.frame[config.label_column])
    if config.task == MULTI_LABEL:
        parsed = []
        for i in rows:
            value = values[i]
            if isinstance(value, (list, tuple, np.ndarray)):
                parsed.append(sorted({str(v).strip() for v in value if str(v).strip()}))
            elif value is None or (not isinstance(value, str) and pd.isna(value)):
                parsed.append([])
            else:
                parsed.append(sorted({p.strip() for p in str(value).split(config.label_delimiter) if p.strip()}))
        return parsed
    missing = [
        i
        for i in rows
        if values[i] is None
        or (not isinstance(values[i], (list, np.ndarray)) and pd.isna(values[i]))
        or str(values[i]).strip() == ""
    ]
    if missing:
        raise LmadaptError(
            f"{len(missing)} row(s) have no label in column '{config.label_column}'",
            where=table.where_rows(missing),
            fix="label those rows or remove them",
        )
    listed = [i for i in rows if isinstance(values[i], (list, tuple, np.ndarray))]
    if listed:
        raise LmadaptError(
            "labels are lists, which means several labels per text",
            where=table.where_rows(listed),
            fix="set data.task=multi_label",
        )
    return [str(values[i]).strip() for i in rows]


def extract_split(table: Table, config: DataConfig, *, with_labels: bool = True) -> Split:
    """Checked texts, optional pairs and labels of a table."""
    texts, rows = _texts(table, config.text_column, "text_column", config)
    pairs = None
    if config.text_pair_column:
        pair_config = dataclasses.replace(config, drop_empty=True)
        pair_texts, pair_rows = _texts(table, config.text_pair_column, "text_pair_column", pair_config)
        lookup = dict(zip(pair_rows, pair_texts))
        pairs = [lookup.get(i, "") for i in rows]
    labels = _labels(table, rows, config) if with_labels else [None] * len(rows)
    return Split(texts=texts, labels=labels, pairs=pairs, rows=rows, source=table)


def load_split(source: str, config: DataConfig, *, with_labels: bool = True) -> Split:
    return extract_split(read_table(source, config.format), config, with_labels=with_labels)


def row_key(split: Split, i: int) -> str:
    """What makes two rows the same: the text, and the text pair if there is one."""
    return split.texts[i] if split.pairs is None else f"{split.texts[i]}\x00{split.pairs[i]}"


def deduplicate(split: Split) -> tuple[Split, int]:
    seen: set[str] = set()
    keep = []
    for i in range(len(split)):
        key = row_key(split, i)
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return split.take(keep), len(split) - len(keep)


def leaked_positions(train: Split, other: Split) -> list[int]:
    """Positions in `other` whose text also occurs in train."""
    train_keys = {row_key(train, i) for i in range(len(train))}
    return [i for i in range(len(other)) if row_key(other, i) in train_keys]


def split_off(split: Split, size: float | int, seed: int, task: str) -> tuple[Split, Split]:
    """A seeded split, stratified by label. Rows of classes too rare to stratify stay on the kept side."""
    # Multi-label rows are stratified by their first label: close enough, and always defined.
    keys = [(labels[0] if labels else "") if task == MULTI_LABEL else labels for labels in split.labels]
    counts = pd.Series(keys).value_counts()
    rare = [i for i, key in enumerate(keys) if counts[key] < 2]
    common = np.array([i for i, key in enumerate(keys) if counts[key] >= 2])
    if isinstance(size, float):
        size = max(1, round(size * len(split)))
    try:
        kept, taken = train_test_split(common, test_size=size, random_state=seed, stratify=[keys[i] for i in common])
    except ValueError:
        try:
            kept, taken = train_test_split(common, test_size=size, random_state=seed)
        except ValueError:
            raise LmadaptError(
                f"too few rows ({len(split)}) to split off {size} for evaluation",
                where=split.source.source if split.source else None,
                fix="add rows, or give data.validation and data.test files",
            ) from None
    return split.take(sorted([*kept, *rare])), split.take(sorted(taken))


def check_known_labels(split: Split, labels: LabelMap, name: str, out_of_scope: Sequence[str] = ()) -> None:
    """Every label of `split` is one the run trained on (or one of the out-of-scope labels)."""
    known = set(labels.labels) | set(out_of_scope)
    unknown_at = [
        i
        for i, row in enumerate(split.labels)
        if (set(row) - known if labels.task == MULTI_LABEL else row not in known)
    ]
    if unknown_at:
        first = split.labels[unknown_at[0]]
        shown = sorted(set(first) - known) if labels.task == MULTI_LABEL else first
        raise LmadaptError(
            f"{name} data has label(s) the training data never shows (e.g. {shown!r}); "
            f"training labels: {', '.join(labels.labels[:20])}{' ...' if len(labels) > 20 else ''}",
            where=split.where(unknown_at),
            fix="add training examples of those labels, or remove those rows",
        )


def _require_two_classes(train: Split, config: DataConfig, report: dict, known: Sequence[str] = ()) -> LabelMap:
    """The training rows' labels, after the `known` ones (a model's labels, for an update), at least two."""
    labels = LabelMap.from_rows(train.labels, config.task)
    if known:
        labels = LabelMap([*known, *(label for label in labels.labels if label not in known)], config.task)
    if len(labels) < 2:
        raise LmadaptError(
            f"training data has only one class ({labels.labels[0] if labels.labels else 'none'})"
            f"{_removed_note(report)}",
            where=train.source.source if train.source else config.train,
            fix="a classifier needs examples of at least two labels",
        )
    return labels


SPLITS = ("train", "validation", "test")
REMOVALS = (("empty_dropped", "empty"), ("duplicates_dropped", "duplicates"), ("leaks_removed", "also in train"))


def removal_summary(report: dict) -> list[str]:
    """One line for each split that lost rows in cleaning: how many rows were read, what was removed, what is left
    (train: before validation and test are split off it)."""
    lines = []
    for name in SPLITS:
        removed = {what: report.get(key, {}).get(name, 0) for key, what in REMOVALS}
        if name not in report.get("rows_read", {}) or not any(removed.values()):
            continue
        read, lost = report["rows_read"][name], sum(removed.values())
        parts = ", ".join(f"{count} {what}" for what, count in removed.items() if count)
        lines.append(f"{name} ({report['sources'][name]}): {lost} of {read} rows removed ({parts}); {read - lost} left")
    return lines


def _removed_note(report: dict) -> str:
    lines = removal_summary(report)
    return f" ({'; '.join(lines)})" if lines else ""


def _require_enough_training_rows(
    train: Split, labels: LabelMap, config: DataConfig, report: dict, updating: bool
) -> None:
    """Two rows per label at least (few-shot sets are as small as asked; an update adds what it has): fewer cannot
    train a classifier."""
    if config.shots_per_class or updating or len(train) >= 2 * len(labels):
        return
    raise LmadaptError(
        f"only {len(train)} training row(s) are left for {len(labels)} labels{_removed_note(report)}",
        where=config.train,
        fix="add rows (at least two per label), give data.validation and data.test files so that none is split "
        "off train, or set data.deduplicate=false if the repeated texts are meant",
    )


def out_of_scope_labels(loaded: dict[str, Split], ood: OodConfig | None, seed: int) -> list[str]:
    """The labels whose rows are out of scope: ood.label (which must occur in the data), or a seeded
    ood.holdout_share of the training labels; none without out-of-scope detection."""
    if ood is None or ood.method == "none":
        return []
    seen = {name: set(split.labels) for name, split in loaded.items()}
    if ood.label:
        if not any(ood.label in labels for labels in seen.values()):
            every = sorted(set().union(*seen.values()), key=str)
            near = nearest(ood.label, [str(label) for label in every])
            raise LmadaptError(
                f"ood.label '{ood.label}' is the label of no row of {', '.join(seen)}; labels there: "
                f"{', '.join(map(str, every[:20]))}{' ...' if len(every) > 20 else ''}",
                where="ood.label",
                fix=f"did you mean '{near}'?"
                if near
                else "name the data's out-of-scope label, or use ood.holdout_share when the data has none",
            )
        if ood.train_as_class and ood.label not in seen["train"]:
            raise LmadaptError(
                f"ood.train_as_class trains '{ood.label}' as a class, but no training row has it",
                where="ood.train_as_class",
                fix="add out-of-scope training rows, or set ood.train_as_class=false",
            )
        return [ood.label]
    if not ood.holdout_share:
        return []
    labels = sorted(seen["train"], key=str)
    count = max(1, round(ood.holdout_share * len(labels)))
    if len(labels) - count < 2:
        raise LmadaptError(
            f"ood.holdout_share={ood.holdout_share} holds out {count} of {len(labels)} labels, leaving fewer than two "
            "to train on",
            where="ood.holdout_share",
            fix="lower it, or give out-of-scope rows a label of their own (ood.label)",
        )
    chosen = np.random.default_rng(seed).choice(len(labels), count, replace=False)
    return sorted((labels[i] for i in chosen), key=str)


def prepare_data(
    config: DataConfig,
    seed: int,
    check_texts: Callable[[list[str]], None] | None = None,
    ood: OodConfig | None = None,
    known_labels: Sequence[str] = (),
) -> PreparedData:
    """Load, validate, clean and split the data a run trains and is evaluated on.

    `check_texts(texts)` sees the training texts as read, before any is removed (the language guard: rows that
    cannot be read say so before they can make the data look too small). With out-of-scope detection (`ood`), the
    out-of-scope labels' rows stay in validation and test (where validation and test are split off train, some of
    them go there too) and leave train, unless ood.train_as_class."""
    report: dict = {"sources": {"train": config.train, "validation": config.validation, "test": config.test}}
    train = load_split(config.train, config)
    if check_texts is not None:
        check_texts(train.texts)
    given = {
        name: load_split(source, config)
        for name, source in (("validation", config.validation), ("test", config.test))
        if source
    }
    loaded = {"train": train, **given}
    report["rows_read"] = {name: len(split.source.frame) for name, split in loaded.items()}
    report["empty_dropped"] = {name: len(split.source.frame) - len(split) for name, split in loaded.items()}

    if config.deduplicate:
        train, dropped = deduplicate(train)
        report["duplicates_dropped"] = {"train": dropped}
        for name in list(given):
            given[name], dropped = deduplicate(given[name])
            report["duplicates_dropped"][name] = dropped

    out_of_scope = out_of_scope_labels({"train": train, **given}, ood, seed)
    _require_two_classes(train, config, report, known_labels)
    if "test" not in given:
        train, given["test"] = split_off(train, config.test_size, seed, config.task)
    if "validation" not in given:
        share = config.validation_size / (1.0 - (config.test_size if not config.test else 0.0))
        train, given["validation"] = split_off(train, share, seed, config.task)
    if out_of_scope:
        removed = [] if ood.train_as_class else train.rows_of(out_of_scope)
        train = train.drop(removed)
        report["ood"] = {"labels": out_of_scope, "train_removed": len(removed)}
    if config.max_train_rows and len(train) > config.max_train_rows:
        train, _ = split_off(train, len(train) - config.max_train_rows, seed, config.task)
    if config.shots_per_class:
        train, report["shots_per_class"] = k_shot(train, config.shots_per_class, seed, config.task)

    labels = _require_two_classes(train, config, report, known_labels)

    report["leaks"] = {}
    report["leaks_removed"] = {}
    out_of_scope_rows: dict[str, Split] = {}
    for name in ("validation", "test"):
        leaked = leaked_positions(train, given[name])
        report["leaks"][name] = len(leaked)
        if leaked and config.drop_leaks:
            given[name] = given[name].drop(leaked)
            report["leaks_removed"][name] = len(leaked)
        elif leaked:
            log.warning("%d %s text(s) also occur in train; kept (data.drop_leaks=false)", len(leaked), name)
        check_known_labels(given[name], labels, name, out_of_scope)
        if out_of_scope:
            outside = given[name].rows_of(out_of_scope)
            report["ood"][name] = len(outside)
            if not ood.train_as_class:  # a trained out-of-scope class stays in its splits, as any class
                out_of_scope_rows[name] = given[name].take(outside)
                given[name] = given[name].drop(outside)
        if not len(given[name]):
            raise LmadaptError(
                f"the {name} split is empty after removing duplicates and texts also in train{_removed_note(report)}",
                where=config.validation if name == "validation" else config.test,
                fix=f"give {name} data that differs from the training data",
            )
    _require_enough_training_rows(train, labels, config, report, updating=bool(known_labels))
    for line in removal_summary(report):
        log.warning("removed before training: %s", line)

    report["rows"] = {"train": len(train), "validation": len(given["validation"]), "test": len(given["test"])}
    report["label_counts"] = {"train": labels.counts(train.labels)}
    if labels.task == MULTI_LABEL:
        report["rows_without_labels"] = {"train": sum(1 for row in train.labels if not row)}
    return PreparedData(train, given["validation"], given["test"], labels, report, out_of_scope, out_of_scope_rows)
