"""Splits: per-user random 75/25, temporal leave-last-one-out, item cold start: seeded, recorded, no leakage."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lmadapt.apps.recommend.splits import (
    cold_start_split,
    random_split,
    split_interactions,
    temporal_leave_one_out,
)
from lmadapt.errors import LmadaptError


def interactions(counts: dict[str, int], seed: int = 0, same_time: bool = False) -> pd.DataFrame:
    """`counts[user]` interactions per user with distinct items and (unless same_time) distinct times."""
    rng = np.random.default_rng(seed)
    rows = []
    for user, count in counts.items():
        items = rng.choice(200, size=count, replace=False)
        times = np.full(count, 1_000) if same_time else rng.permutation(count) * 10 + 1_000
        rows += [(user, f"i{item}", 1.0, int(time)) for item, time in zip(items, times)]
    return pd.DataFrame(rows, columns=["user", "item", "weight", "time"])


def pairs(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame["user"], frame["item"]))


def test_random_split_gives_each_user_floor_three_quarters_to_train():
    frame = interactions({"a": 1, "b": 4, "c": 5, "d": 7, "e": 100})
    split = random_split(frame, 0.75, seed=42)
    train_counts = split.train.groupby("user").size().reindex(list("abcde"), fill_value=0)
    # python_stratified_split keeps rank / n <= 0.75: floor(0.75 n) of each user's interactions.
    assert train_counts.tolist() == [0, 3, 3, 5, 75]
    assert pairs(split.train).isdisjoint(pairs(split.test))
    assert pairs(split.train) | pairs(split.test) == pairs(frame)
    assert split.validation.empty
    record = split.record
    assert (record["kind"], record["seed"], record["train_rows"], record["test_rows"]) == ("random_75_25", 42, 86, 31)
    assert record["test_users_without_train"] == 1  # user a: one interaction, in test (nobody is filtered out)


def test_random_split_is_the_same_for_the_same_seed_whatever_the_row_order():
    frame = interactions({f"u{i}": 12 for i in range(30)})
    first = random_split(frame, seed=7)
    shuffled = random_split(frame.sample(frac=1.0, random_state=3), seed=7)
    assert pairs(first.test) == pairs(shuffled.test)
    assert pairs(random_split(frame, seed=8).test) != pairs(first.test)


def test_random_split_validation_comes_from_train_and_leaves_test_alone():
    frame = interactions({f"u{i}": 20 for i in range(10)})
    plain = random_split(frame, seed=1)
    tuned = random_split(frame, seed=1, validation=0.25)
    assert pairs(tuned.test) == pairs(plain.test)
    assert pairs(tuned.train_and_validation()) == pairs(plain.train)
    assert tuned.validation.groupby("user").size().eq(15 - math.floor(0.75 * 15)).all()  # 15 train -> 4 validation
    assert pairs(tuned.train).isdisjoint(pairs(tuned.validation))


def test_temporal_split_holds_out_the_last_and_second_last_by_time():
    frame = interactions({"a": 6, "b": 3, "c": 2, "d": 1}, seed=5)
    split = temporal_leave_one_out(frame, seed=0)
    for user in ("a", "b"):
        ordered = frame[frame["user"] == user].sort_values("time")["item"].tolist()
        assert split.test.loc[split.test["user"] == user, "item"].tolist() == ordered[-1:]
        assert split.validation.loc[split.validation["user"] == user, "item"].tolist() == ordered[-2:-1]
        assert set(split.train.loc[split.train["user"] == user, "item"]) == set(ordered[:-2])
    # Users with fewer than 3 interactions stay in train only.
    assert set(split.test["user"]) == {"a", "b"} and split.train["user"].value_counts()[["c", "d"]].tolist() == [2, 1]
    assert split.record["users_train_only"] == 2
    # Nothing held out happened before what the user trains on.
    last_train = split.train.groupby("user")["time"].max()
    assert (split.test.set_index("user")["time"] >= last_train[split.test["user"]].to_numpy()).all()


def test_temporal_ties_are_broken_by_a_seeded_hash_not_by_item_id():
    frame = interactions({f"u{i}": 8 for i in range(40)}, same_time=True)  # every interaction at the same second
    split = temporal_leave_one_out(frame, seed=3)
    again = temporal_leave_one_out(frame.sample(frac=1.0, random_state=9), seed=3)
    assert pairs(split.test) == pairs(again.test) and pairs(split.validation) == pairs(again.validation)
    highest = frame.assign(n=frame["item"].str[1:].astype(int)).sort_values("n").groupby("user")["item"].last()
    lowest = frame.assign(n=frame["item"].str[1:].astype(int)).sort_values("n").groupby("user")["item"].first()
    test_item = split.test.set_index("user")["item"]
    assert 0 < (test_item == highest[test_item.index]).sum() < 40 / 2  # not the highest id every time
    assert (test_item != lowest[test_item.index]).any()
    assert pairs(temporal_leave_one_out(frame, seed=4).test) != pairs(split.test)


def test_cold_start_holds_out_items_with_all_their_interactions():
    frame = interactions({f"u{i}": 30 for i in range(25)}, seed=2)
    split = cold_start_split(frame, seed=11)
    n_items = frame["item"].nunique()
    assert len(split.cold_items) == round(0.15 * n_items) == split.record["cold_items"]
    cold = set(split.cold_items)
    assert not cold & set(split.train["item"]) and not cold & set(split.validation["item"])
    assert pairs(split.test) == pairs(frame[frame["item"].isin(cold)])
    # Validation: each user's last warm interaction.
    warm = frame[~frame["item"].isin(cold)]
    last = warm.sort_values("time").groupby("user")["item"].last()
    assert split.validation.set_index("user")["item"].sort_index().equals(last.sort_index().rename("item"))
    assert split.cold_items == cold_start_split(frame.iloc[::-1], seed=11).cold_items
    assert split.cold_items != cold_start_split(frame, seed=12).cold_items


def test_repeated_pairs_are_merged_into_their_latest_row_before_splitting():
    frame = pd.DataFrame(
        {
            "user": ["a"] * 5,
            "item": ["x", "y", "x", "z", "w"],
            "weight": [1.0, 2.0, 3.0, 4.0, 5.0],
            "time": [1, 2, 9, 4, 5],
        }
    )
    split = temporal_leave_one_out(frame)
    assert split.record["repeated_pairs_merged"] == 1
    assert split.test.to_dict("records") == [{"user": "a", "item": "x", "weight": 3.0, "time": 9}]
    assert "x" not in set(split.train["item"]) | set(split.validation["item"])


def test_bad_split_requests_say_what_is_wrong():
    frame = interactions({"a": 4})
    with pytest.raises(LmadaptError, match="lack the column\\(s\\) time") as error:
        random_split(frame.drop(columns="time"))
    assert "fix: read them with lmadapt.apps.recommend.data" in str(error.value)
    with pytest.raises(LmadaptError, match="split ratios must lie between 0 and 1 \\(ratio 75"):
        random_split(frame, ratio=75)
    with pytest.raises(LmadaptError, match="unknown split 'temporal'") as error:
        split_interactions(frame, "temporal")
    assert "did you mean 'temporal_loo'" in str(error.value)
    with pytest.raises(LmadaptError, match="there are no interactions to split"):
        temporal_leave_one_out(frame.iloc[:0])
