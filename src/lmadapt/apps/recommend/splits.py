"""Seeded, recorded splits of the interactions into train, validation and test.

Three protocols, by the names the benchmark records:

- `random_75_25`: per user, a seeded random 75% of the interactions train and the rest test, rounded as the
  recommenders project's python_stratified_split rounds (a user's interactions in random order; those whose
  rank / n <= 0.75 train, i.e. floor(0.75 n); no user is filtered out by default). This is the protocol of their
  MovieLens-100k table.
- `temporal_loo`: per user, by time, the last interaction is test and the second-last validation; users with
  fewer than 3 interactions stay in train only.
- `cold_start`: a seeded 15% of the items are held out with all their interactions (test); of the rest, each user's
  last interaction is validation (users with at least 3), the others train.

Every random choice and every tie in time is decided by a seeded hash of the ids (of (user, item), or of the
item), never by the ids' order or the rows' order: the same data and seed give the same split, whatever the
row order. Each (user, item) pair appears once: repeats are merged into their latest row before splitting.

No feature may come from the test period: every model fits on `train` (or `train_and_validation()` once its
settings are chosen on `validation`), never on `test`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lmadapt.errors import LmadaptError, did_you_mean

DEFAULT_SEED = 42


@dataclass
class Split:
    """Train, validation and test interactions, and a record of how they were made (for the recommender folder)."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    record: dict = field(default_factory=dict)
    cold_items: list[str] = field(default_factory=list)  # item cold start: the held-out items

    def train_and_validation(self) -> pd.DataFrame:
        """What a model refitted for the test may learn from, once its settings are chosen on validation."""
        return pd.concat([self.train, self.validation], ignore_index=True)


def seeded_order(*columns: pd.Series, seed: int) -> np.ndarray:
    """A pseudo-random uint64 per row from the seed and the rows' ids: the same ids and seed give the same
    number on every run and machine (pandas' fixed-key SipHash), whatever the order of the rows."""
    joined = pd.Series(str(seed), index=columns[0].index)
    for column in columns:
        joined = joined + "\x1f" + column.astype(str)
    return pd.util.hash_pandas_object(joined, index=False).to_numpy()


def _one_row_per_pair(interactions: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The latest row of each (user, item) pair (ties in time: the later row), and how many rows were merged."""
    frame = interactions.reset_index(drop=True)
    order = np.lexsort((np.arange(len(frame)), frame["time"].to_numpy()))
    latest = frame.iloc[order].drop_duplicates(["user", "item"], keep="last")
    return latest.sort_index().reset_index(drop=True), len(frame) - len(latest)


def _check(interactions: pd.DataFrame) -> None:
    missing = [c for c in ("user", "item", "weight", "time") if c not in interactions.columns]
    if missing:
        raise LmadaptError(
            f"the interactions lack the column(s) {', '.join(missing)}",
            where="split",
            fix="read them with lmadapt.apps.recommend.data (user, item, weight, time)",
        )
    if interactions.empty:
        raise LmadaptError("there are no interactions to split", where="split", fix="check the data and its filter")


def _user_rank(frame: pd.DataFrame, *keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's 1-based rank within its user by `keys` (last key first, numpy lexsort style), and its user's
    number of rows."""
    user_codes = pd.factorize(frame["user"])[0]
    order = np.lexsort((*keys, user_codes))
    rank = np.empty(len(frame), dtype=np.int64)
    sorted_users = user_codes[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_users)) + 1]
    lengths = np.diff(np.r_[starts, len(frame)])
    rank[order] = np.arange(len(frame)) - np.repeat(starts, lengths) + 1
    count = np.bincount(user_codes)[user_codes]
    return rank, count


def _counts(train: pd.DataFrame, validation: pd.DataFrame, test: pd.DataFrame) -> dict:
    return {
        "train_rows": len(train),
        "validation_rows": len(validation),
        "test_rows": len(test),
        "train_users": int(train["user"].nunique()),
        "validation_users": int(validation["user"].nunique()),
        "test_users": int(test["user"].nunique()),
        "test_users_without_train": int((~test["user"].drop_duplicates().isin(train["user"])).sum()),
        "train_items": int(train["item"].nunique()),
        "test_items_without_train": int((~test["item"].drop_duplicates().isin(train["item"])).sum()),
    }


def random_split(
    interactions: pd.DataFrame,
    ratio: float = 0.75,
    seed: int = DEFAULT_SEED,
    validation: float = 0.0,
    min_interactions: int = 1,
) -> Split:
    """Per user, a seeded random `ratio` of the interactions (floor(ratio * n)) to train, the rest to test. With
    `validation` > 0, that share of each user's training part (again floor) becomes validation, by a second
    seeded order; the test part is the same whatever `validation` is. Users with fewer than `min_interactions`
    are left out (1: nobody, as in the recommenders project's default)."""
    _check(interactions)
    if not 0 < ratio < 1 or not 0 <= validation < 1:
        raise LmadaptError(
            f"split ratios must lie between 0 and 1 (ratio {ratio}, validation {validation})",
            where="split",
            fix="e.g. ratio=0.75 and validation=0.25",
        )
    frame, merged = _one_row_per_pair(interactions)
    per_user = frame.groupby("user")["item"].transform("size")
    dropped_users = int(frame.loc[per_user < min_interactions, "user"].nunique())
    frame = frame[per_user >= min_interactions].reset_index(drop=True)
    rank, count = _user_rank(frame, seeded_order(frame["user"], frame["item"], seed=seed))
    in_train = rank / count <= ratio
    train, test = frame[in_train], frame[~in_train]
    held = train.iloc[:0]
    if validation > 0:
        rank, count = _user_rank(train, seeded_order(train["user"], train["item"], seed=seed + 1))
        keep = rank / count <= 1 - validation
        train, held = train[keep], train[~keep]
    record = {
        "kind": "random_75_25" if ratio == 0.75 else "random",
        "seed": seed,
        "ratio": ratio,
        "validation": validation,
        "order": "per user, a seeded hash of (seed, user, item)",
        "rounding": "floor(ratio * n) per user train (rank / n <= ratio, as python_stratified_split)",
        "min_interactions": min_interactions,
        "users_left_out": dropped_users,
        "repeated_pairs_merged": merged,
        **_counts(train, held, test),
    }
    return Split(train.reset_index(drop=True), held.reset_index(drop=True), test.reset_index(drop=True), record)


def temporal_leave_one_out(interactions: pd.DataFrame, seed: int = DEFAULT_SEED) -> Split:
    """Per user, by time: the last interaction is test, the second-last validation, the rest train. Ties in time
    are ordered by a seeded hash of (user, item). Users with fewer than 3 interactions stay in train only."""
    _check(interactions)
    frame, merged = _one_row_per_pair(interactions)
    tie = seeded_order(frame["user"], frame["item"], seed=seed)
    rank, count = _user_rank(frame, tie, frame["time"].to_numpy())
    long_enough = count >= 3
    test_rows = long_enough & (rank == count)
    validation_rows = long_enough & (rank == count - 1)
    train = frame[~test_rows & ~validation_rows]
    record = {
        "kind": "temporal_loo",
        "seed": seed,
        "order": "per user by time; ties by a seeded hash of (seed, user, item)",
        "min_interactions": 3,
        "users_train_only": int(frame.loc[~long_enough, "user"].nunique()),
        "repeated_pairs_merged": merged,
        **_counts(train, frame[validation_rows], frame[test_rows]),
    }
    return Split(
        train.reset_index(drop=True),
        frame[validation_rows].reset_index(drop=True),
        frame[test_rows].reset_index(drop=True),
        record,
    )


def cold_start_split(interactions: pd.DataFrame, seed: int = DEFAULT_SEED, cold_share: float = 0.15) -> Split:
    """Item cold start: round(cold_share * items) items, chosen by a seeded hash of their ids, are held out with
    all their interactions (test). Of the others, each user's last interaction (by time, ties by the seeded hash)
    is validation for users with at least 3, the rest train. The held-out items never appear in train or
    validation."""
    _check(interactions)
    if not 0 < cold_share < 1:
        raise LmadaptError(
            f"cold_share must lie between 0 and 1 (got {cold_share})", where="split", fix="e.g. cold_share=0.15"
        )
    frame, merged = _one_row_per_pair(interactions)
    items = pd.Series(pd.unique(frame["item"]))
    order = np.argsort(seeded_order(items, seed=seed), kind="stable")
    cold = sorted(items.iloc[order[: round(cold_share * len(items))]].tolist())
    is_cold = frame["item"].isin(set(cold)).to_numpy()
    warm, test = frame[~is_cold], frame[is_cold]
    rank, count = _user_rank(warm, seeded_order(warm["user"], warm["item"], seed=seed), warm["time"].to_numpy())
    validation_rows = (count >= 3) & (rank == count)
    train, held = warm[~validation_rows], warm[validation_rows]
    record = {
        "kind": "cold_start",
        "seed": seed,
        "cold_share": cold_share,
        "cold_items": len(cold),
        "order": "items by a seeded hash of (seed, item); validation per user by time, ties by (seed, user, item)",
        "repeated_pairs_merged": merged,
        **_counts(train, held, test),
    }
    return Split(
        train.reset_index(drop=True), held.reset_index(drop=True), test.reset_index(drop=True), record, cold_items=cold
    )


SPLITS: dict[str, Callable[..., Split]] = {
    "random_75_25": random_split,
    "temporal_loo": temporal_leave_one_out,
    "cold_start": cold_start_split,
}


def split_interactions(interactions: pd.DataFrame, kind: str, seed: int = DEFAULT_SEED, **options) -> Split:
    """The split named `kind` (random_75_25, temporal_loo, cold_start) with the given seed and options."""
    if kind not in SPLITS:
        raise LmadaptError(f"unknown split '{kind}'", where="split", fix=did_you_mean(kind, list(SPLITS)))
    return SPLITS[kind](interactions, seed=seed, **options)
