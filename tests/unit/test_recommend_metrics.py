"""Full-ranking metrics against values computed by hand, ties, exclusion of seen items, candidates."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lmadapt.apps.recommend.base import Catalog
from lmadapt.apps.recommend.metrics import evaluate, top_k
from lmadapt.errors import LmadaptError

ITEMS = [f"i{n}" for n in range(6)]


class FixedScores:
    """A model whose scores are given: the same descending row for every user unless set per user."""

    name = "fixed"

    def __init__(self, rows: dict[str, list[float]] | None = None, default=(0.9, 0.8, 0.7, 0.6, 0.5, 0.4)):
        self.rows, self.default = rows or {}, list(default)

    def score(self, users, items=None):
        return np.array([self.rows.get(user, self.default) for user in users], dtype=float)


def frame(pairs: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame({"user": [u for u, _ in pairs], "item": [i for _, i in pairs], "weight": 1.0, "time": 0})


def test_metrics_equal_hand_computed_values():
    catalog = Catalog(ITEMS)
    # User a saw i0; relevant i2, i4, i5. Ranking without i0: i1 i2 i3 i4 i5 -> relevant at ranks 2, 4, 5.
    # User b saw nothing; relevant i0 i1 i3 i4 i5 -> relevant at ranks 1, 2, 4, 5, 6.
    test = frame([("a", "i2"), ("a", "i4"), ("a", "i5")] + [("b", i) for i in ("i0", "i1", "i3", "i4", "i5")])
    seen = frame([("a", "i0")])
    result = evaluate(FixedScores(), test, seen, catalog, ks=(3, 5), per_user=True)
    per_user = result["per_user"].set_index("user")
    log2 = math.log2
    ideal3 = 1 + 1 / log2(3) + 1 / log2(4)
    expected = {
        "a": {
            "precision_at_3": 1 / 3,
            "recall_at_3": 1 / 3,
            "hr_at_3": 1.0,
            "ndcg_at_3": (1 / log2(3)) / ideal3,
            "map_at_3": (1 / 2) / 3,
            "map_all_relevant_at_3": (1 / 2) / 3,
            "precision_at_5": 3 / 5,
            "recall_at_5": 1.0,
            "ndcg_at_5": (1 / log2(3) + 1 / log2(5) + 1 / log2(6)) / ideal3,
            "map_at_5": (1 / 2 + 2 / 4 + 3 / 5) / 3,
            "mrr": 1 / 2,
        },
        "b": {
            "precision_at_3": 2 / 3,
            "recall_at_3": 2 / 5,
            "ndcg_at_3": (1 + 1 / log2(3)) / ideal3,
            "map_at_3": (1 + 1) / 3,  # normalised by min(R, k) = 3
            "map_all_relevant_at_3": (1 + 1) / 5,  # normalised by R = 5
            "map_at_5": (1 + 1 + 3 / 4 + 4 / 5) / 5,
            "mrr": 1.0,
        },
    }
    for user, values in expected.items():
        for name, value in values.items():
            assert per_user.loc[user, name] == pytest.approx(value), (user, name)
    assert result["ndcg_at_3"] == pytest.approx((expected["a"]["ndcg_at_3"] + expected["b"]["ndcg_at_3"]) / 2)
    assert result["users"] == 2 and result["candidates"] == 6
    # Top 3: a is shown i1 i2 i3, b i0 i1 i2: four distinct items of six.
    assert result["coverage_at_3"] == pytest.approx(4 / 6)


def test_natural_log_discount_gives_the_same_ndcg():
    """The recommenders project discounts by ln(1 + rank); the base cancels in DCG / IDCG."""
    ranks, relevant, k = np.array([2, 4, 5]), 3, 5
    natural = sum(1 / math.log(1 + r) for r in ranks) / sum(1 / math.log(1 + i) for i in range(1, relevant + 1))
    test = frame([("a", "i2"), ("a", "i4"), ("a", "i5")])
    result = evaluate(FixedScores(), test, frame([("a", "i0")]), Catalog(ITEMS), ks=(k,))
    assert result["ndcg_at_5"] == pytest.approx(natural)


def test_ties_are_ordered_by_catalogue_position():
    scores = np.array([[1.0, 2.0, 2.0, 2.0, 0.0, 2.0]])
    assert top_k(scores, 3).tolist() == [[1, 2, 3]]
    assert top_k(scores, 10).tolist() == [[1, 2, 3, 5, 0, 4]]
    rng = np.random.default_rng(0)
    many = rng.integers(0, 4, size=(50, 300)).astype(float)  # heavy ties
    expected = np.argsort(-many, axis=1, kind="stable")[:, :20]
    assert np.array_equal(top_k(many, 20), expected)
    # MRR counts the tied items placed before the relevant one.
    test = frame([("a", "i3")])
    result = evaluate(FixedScores(default=(1, 1, 1, 1, 1, 1)), test, frame([("a", "i1")]), Catalog(ITEMS), ks=(1,))
    assert result["mrr"] == pytest.approx(1 / 3)  # i0, i2, then i3


def test_seen_items_are_excluded_and_never_relevant():
    catalog = Catalog(ITEMS)
    test = frame([("a", "i0"), ("a", "i3")])
    seen = frame([("a", "i0"), ("a", "i1"), ("a", "i2")])  # i0 is in both: it cannot be recommended
    result = evaluate(FixedScores(), test, seen, catalog, ks=(1,), per_user=True)
    assert result["precision_at_1"] == 1.0 and result["recall_at_1"] == 1.0  # i3 ranks first once i0-i2 go
    # A user whose only test item was seen is not evaluated.
    with pytest.raises(LmadaptError, match="no test user has a relevant item"):
        evaluate(FixedScores(), frame([("a", "i0")]), seen, catalog)


def test_candidates_narrow_the_ranking():
    catalog = Catalog(ITEMS)
    test = frame([("a", "i5")])
    everything = evaluate(FixedScores(), test, frame([]), catalog, ks=(1,))
    cold_only = evaluate(FixedScores(), test, frame([]), catalog, ks=(1,), candidates=["i4", "i5"])
    assert everything["mrr"] == pytest.approx(1 / 6) and cold_only["mrr"] == pytest.approx(1 / 2)
    assert cold_only["candidates"] == 2 and cold_only["coverage_at_1"] == pytest.approx(1 / 2)


def test_precision_keeps_k_when_fewer_items_can_be_shown():
    catalog = Catalog(ITEMS[:3])
    result = evaluate(FixedScores(default=(3, 2, 1)), frame([("a", "i2")]), frame([("a", "i0")]), catalog, ks=(5,))
    assert result["precision_at_5"] == pytest.approx(1 / 5) and result["recall_at_5"] == 1.0
    assert result["hr_at_5"] == 1.0 and result["ndcg_at_5"] == pytest.approx(1 / math.log2(3))


def test_bad_cut_offs_are_refused():
    with pytest.raises(LmadaptError, match="cut-offs must be positive integers"):
        evaluate(FixedScores(), frame([("a", "i1")]), frame([]), Catalog(ITEMS), ks=(0, 10))
