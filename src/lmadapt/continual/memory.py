"""The replay memory: a bounded, seeded sample of past training examples, kept in the run folder."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmadapt.data.split import Split, split_from_rows, split_rows

MEMORY_FILE = "memory.json"


@dataclass
class ReplayMemory:
    """At most `size` examples. class_balanced: equal room per label seen (the room of labels with fewer
    examples goes to the others); reservoir: every example seen is kept with equal probability."""

    size: int
    policy: str
    seed: int
    examples: list[dict] = field(default_factory=list)  # {"text", "pair", "label"}
    seen: int = 0

    def add(self, split: Split) -> None:
        rng = np.random.default_rng(self.seed + self.seen)
        rows = split_rows(split)
        if self.policy == "reservoir":
            for row in rows:
                self.seen += 1
                if len(self.examples) < self.size:
                    self.examples.append(row)
                else:
                    slot = rng.integers(self.seen)
                    if slot < self.size:
                        self.examples[slot] = row
            return
        self.seen += len(rows)
        by_label: dict[str, list[dict]] = {}
        for row in self.examples + [rows[i] for i in rng.permutation(len(rows))]:
            by_label.setdefault(row["label"], []).append(row)
        self.examples = _balanced(by_label, self.size)

    def split(self) -> Split:
        return split_from_rows(self.examples)

    def save(self, folder: Path) -> None:
        raw = {
            "size": self.size,
            "policy": self.policy,
            "seed": self.seed,
            "seen": self.seen,
            "examples": self.examples,
        }
        (folder / MEMORY_FILE).write_text(json.dumps(raw, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> ReplayMemory:
        return cls(**json.loads((folder / MEMORY_FILE).read_text(encoding="utf-8")))


def _balanced(by_label: dict[str, list[dict]], size: int) -> list[dict]:
    """Up to `size` rows, as many per label as fair shares allow (earlier rows of a label kept first)."""
    room = {label: 0 for label in by_label}
    left = size
    while left > 0:
        growing = [label for label in by_label if room[label] < len(by_label[label])]
        if not growing:
            break
        share = max(1, left // len(growing))
        for label in growing:
            extra = min(share, len(by_label[label]) - room[label], left)
            room[label] += extra
            left -= extra
            if left == 0:
                break
    return [row for label, rows in by_label.items() for row in rows[: room[label]]]
