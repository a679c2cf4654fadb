"""The k-shot sampler: k training rows per class, seeded and stratified.

For one seed, the rows are nested across k (the 8-shot set is part of the 16-shot set), so a
sweep over shots measures more data, not other data; other seeds draw other rows.
"""

from __future__ import annotations

import numpy as np

from lmadapt.data.labels import MULTI_LABEL
from lmadapt.data.split import Split
from lmadapt.errors import LmadaptError


def k_shot(split: Split, k: int, seed: int, task: str) -> tuple[Split, dict[str, int]]:
    """k rows of each class (all of a class that has fewer), in a seeded order; and the count per class."""
    if task == MULTI_LABEL:
        raise LmadaptError(
            "k shots per class needs one label per text",
            where="data.shots_per_class",
            fix="use data.max_train_rows for a multi-label subset",
        )
    if k < 1:
        raise LmadaptError(f"data.shots_per_class must be at least 1, got {k}", where="data.shots_per_class")
    labels = np.array([str(label) for label in split.labels])
    rng = np.random.default_rng(seed)
    chosen, counts = [], {}
    # One shuffle per class, in a fixed class order: what a class gets does not depend on k.
    for label in sorted(set(labels)):
        rows = np.flatnonzero(labels == label)
        picked = rows[rng.permutation(len(rows))][:k]
        chosen.extend(picked.tolist())
        counts[label] = len(picked)
    # A seeded interleaving, so that a batch is not one class after another.
    order = np.random.default_rng(seed + 1).permutation(len(chosen))
    return split.take([chosen[i] for i in order]), counts
