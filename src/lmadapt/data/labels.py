"""Label maps (id <-> label, in training order) and class weights."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

SINGLE_LABEL = "single_label"
MULTI_LABEL = "multi_label"

# How a missing number reads once a table is written as text (pandas' astype(str) gives "nan"). Only these:
# "None", "NA" or "null" may be real class names.
NAN_SPELLINGS = frozenset({"nan", "NaN", "NAN"})


def nan_as_missing(labels: pd.Series) -> pd.Series:
    """A label column with NaN spelt out as text made missing, so it is reported like an empty label
    instead of learnt as a class "NaN"."""
    return labels.map(lambda label: None if isinstance(label, str) and label.strip() in NAN_SPELLINGS else label)


def _natural_key(label: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", label)]


@dataclass
class LabelMap:
    """The labels a model predicts, in the order of its output units."""

    labels: list[str]
    task: str = SINGLE_LABEL
    threshold: float = 0.5  # multi-label decision threshold, tuned on validation

    @classmethod
    def from_rows(cls, rows: list, task: str) -> LabelMap:
        """Collect labels from training rows (a label each, or a list of labels each)."""
        seen = {label for row in rows for label in row} if task == MULTI_LABEL else set(rows)
        return cls(sorted(seen, key=_natural_key), task)

    @property
    def problem_type(self) -> str:
        """The name transformers' configs use for this task."""
        return "multi_label_classification" if self.task == MULTI_LABEL else "single_label_classification"

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def __len__(self) -> int:
        return len(self.labels)

    def encode(self, rows: list) -> np.ndarray:
        """Label ids (single-label) or a 0/1 float matrix (multi-label)."""
        index = self.label2id
        if self.task == MULTI_LABEL:
            matrix = np.zeros((len(rows), len(self.labels)), dtype=np.float32)
            for i, row in enumerate(rows):
                for label in row:
                    matrix[i, index[label]] = 1.0
            return matrix
        return np.array([index[label] for label in rows], dtype=np.int64)

    def class_weights(self, rows: list) -> np.ndarray:
        """Balanced class weights (single-label) or positive-class weights per label (multi-label)."""
        encoded = self.encode(rows)
        if self.task == MULTI_LABEL:
            positives = encoded.sum(axis=0)
            return ((len(rows) - positives) / np.maximum(positives, 1.0)).astype(np.float32)
        counts = np.bincount(encoded, minlength=len(self.labels)).astype(np.float64)
        return (len(rows) / (len(self.labels) * np.maximum(counts, 1.0))).astype(np.float32)

    def counts(self, rows: list) -> dict[str, int]:
        flat = [label for row in rows for label in row] if self.task == MULTI_LABEL else rows
        found = Counter(flat)
        return {label: found.get(label, 0) for label in self.labels}

    def to_json(self) -> dict:
        raw = {"task": self.task, "id2label": {str(i): label for i, label in self.id2label.items()}}
        if self.task == MULTI_LABEL:
            raw["threshold"] = self.threshold
        return raw

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> LabelMap:
        raw = json.loads(path.read_text(encoding="utf-8"))
        ids = sorted(raw["id2label"], key=int)
        return cls([raw["id2label"][i] for i in ids], raw.get("task", SINGLE_LABEL), raw.get("threshold", 0.5))
