"""Out-of-scope evaluation: detection metrics, abstention metrics, threshold calibration and the two plots, on
small hand-made tables whose numbers are worked out by hand or by a direct loop."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from lmadapt.errors import LmadaptError
from lmadapt.evaluation.ood import (
    abstention_metrics,
    calibrate_threshold,
    detection_metrics,
    plot_accuracy_recall_tradeoff,
    plot_score_distributions,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# detection_metrics


def test_perfectly_separated_scores_detect_perfectly():
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.8])
    is_ood = np.array([False, False, False, True, True])
    assert detection_metrics(scores, is_ood) == {"auroc": 1.0, "fpr95": 0.0, "aupr": 1.0}


def test_detection_metrics_on_a_small_table_with_a_tie():
    # In scope 1, 2, 3, 4; out of scope 2.5, 3, 5.
    scores = np.array([1, 2, 3, 4, 2.5, 3, 5])
    is_ood = np.array([False] * 4 + [True] * 3)
    metrics = detection_metrics(scores, is_ood)
    # Pairs (out of scope above in scope, ties half): 2.5 beats 1, 2; 3 beats 1, 2 and ties 3; 5 beats all four.
    assert metrics["auroc"] == pytest.approx((2 + 2.5 + 4) / 12)
    # Flagging from the top: >=5 precision 1 at recall 1/3; >=4 adds no recall; >=3 precision 2/4 at recall 2/3;
    # >=2.5 precision 3/5 at recall 1. AP = 1/3 * 1 + 1/3 * 1/2 + 1/3 * 3/5.
    assert metrics["aupr"] == pytest.approx(0.7)
    # With 4 in-scope rows, keeping 95% of them means flagging none: only the 5 is above every in-scope score.
    assert metrics["fpr95"] == pytest.approx(2 / 3)


def test_fpr95_accepts_the_out_of_scope_rows_at_or_below_the_95_percent_in_scope_threshold():
    # 20 in-scope rows 1..20: keeping 95% (19) of them puts the threshold at 19 (flag only score 20).
    in_scope = np.arange(1.0, 21.0)
    # Out-of-scope rows at or below 19 are accepted as in scope: 0.5, 5, 10, 18.5 and the tie at 19.
    out_of_scope = np.array([0.5, 5, 10, 18.5, 19, 19.5, 25, 30, 40, 50])
    scores = np.concatenate([in_scope, out_of_scope])
    is_ood = np.array([False] * 20 + [True] * 10)
    metrics = detection_metrics(scores, is_ood)
    assert metrics["fpr95"] == pytest.approx(0.5)
    pairs = sum(1.0 if o > i else 0.5 if o == i else 0.0 for o in out_of_scope for i in in_scope)
    assert metrics["auroc"] == pytest.approx(pairs / 200)


@pytest.mark.parametrize("is_ood, missing", [([False, False], "out-of-scope"), ([True, True], "in-scope")])
def test_detection_metrics_need_both_kinds_of_rows(is_ood, missing):
    with pytest.raises(LmadaptError, match=f"no {missing} rows") as raised:
        detection_metrics(np.array([0.1, 0.9]), np.array(is_ood))
    assert raised.value.fix


# abstention_metrics


def test_abstention_metrics_on_six_rows():
    true_ids = np.array([0, 1, 2, 1, -1, -1])
    predicted_ids = np.array([0, 1, 0, 1, 2, 0])
    abstained = np.array([False, True, False, False, True, True])
    # In scope: rows 0-3, right on 0, 1, 3; row 1 abstained, so rows 0 and 3 count. Out of scope: rows 4, 5, both
    # abstained. Abstained rows: 1, 4, 5.
    assert abstention_metrics(true_ids, predicted_ids, abstained) == {
        "in_scope_accuracy": 2 / 4,
        "accuracy_without_abstention": 3 / 4,
        "in_scope_abstained": 1 / 4,
        "oos_recall": 2 / 2,
        "oos_precision": 2 / 3,
        "accuracy": (2 + 2) / 6,
        "in_scope_rows": 4,
        "oos_rows": 2,
    }


def test_oos_precision_is_zero_when_nothing_is_abstained_and_none_without_out_of_scope_rows():
    nothing_abstained = abstention_metrics(np.array([0, -1]), np.array([0, 0]), np.array([False, False]))
    assert nothing_abstained["oos_precision"] == 0.0
    assert nothing_abstained["oos_recall"] == 0.0
    no_oos = abstention_metrics(np.array([0, 1]), np.array([0, 0]), np.array([False, True]))
    assert no_oos["oos_recall"] is None and no_oos["oos_precision"] is None
    assert no_oos["oos_rows"] == 0 and no_oos["in_scope_accuracy"] == 0.5


# calibrate_threshold


def test_the_lowest_threshold_within_the_in_scope_accuracy_budget_is_chosen():
    # In scope (true id 0): 0.05 predicted wrong, 0.1, 0.2, 0.3, 0.6 right. Out of scope: 0.5, 0.7, 0.9.
    scores = np.array([0.05, 0.1, 0.2, 0.3, 0.6, 0.5, 0.7, 0.9])
    true_ids = np.array([0, 0, 0, 0, 0, -1, -1, -1])
    predicted_ids = np.array([1, 0, 0, 0, 0, 0, 0, 0])
    # Right answers lost above t: 4 at 0.05, 3 at 0.1, 2 at 0.2, 1 at 0.3, 0 at 0.6. A budget of one row (0.2 of 5):
    threshold, metrics = calibrate_threshold(scores, true_ids, predicted_ids, max_in_scope_loss=0.2)
    assert threshold == 0.3 and metrics["rule"] == "max_in_scope_loss"
    assert metrics["in_scope_accuracy"] == pytest.approx(3 / 5) and metrics["accuracy_without_abstention"] == 0.8
    assert metrics["oos_recall"] == 1.0 and metrics["in_scope_abstained"] == pytest.approx(1 / 5)
    assert calibrate_threshold(scores, true_ids, predicted_ids, max_in_scope_loss=0.4)[0] == 0.2
    threshold, metrics = calibrate_threshold(scores, true_ids, predicted_ids, max_in_scope_loss=0.0)
    assert threshold == 0.6 and metrics["in_scope_accuracy"] == 0.8 and metrics["oos_recall"] == pytest.approx(2 / 3)


def test_the_budget_needs_no_out_of_scope_rows_and_rounds_whole_rows():
    # 100 in-scope rows, all right: 3% is three rows (0.03 * 100 is 3.0000000000000004 in floating point).
    scores = np.arange(100.0)
    threshold, metrics = calibrate_threshold(scores, np.zeros(100), np.zeros(100), max_in_scope_loss=0.03)
    assert threshold == 96.0 and metrics["in_scope_accuracy"] == 0.97 and metrics["oos_recall"] is None


def test_forced_rows_are_abstained_whatever_their_score_and_spend_the_budget():
    # In scope 0.1, 0.2 (forced), 0.3, all right; out of scope 0.05 (forced), 0.8, 0.9.
    scores = np.array([0.1, 0.2, 0.3, 0.05, 0.8, 0.9])
    true_ids = np.array([0, 0, 0, -1, -1, -1])
    predicted_ids = np.zeros(6, dtype=int)
    forced = np.array([False, True, False, True, False, False])
    # A budget of one row (0.34 of 3): the forced row spends it, so no right answer may go on the score.
    threshold, metrics = calibrate_threshold(scores, true_ids, predicted_ids, forced=forced, max_in_scope_loss=0.34)
    assert threshold == 0.3
    assert metrics["oos_recall"] == 1.0
    assert metrics["in_scope_accuracy"] == pytest.approx(2 / 3)
    assert metrics["in_scope_abstained"] == pytest.approx(1 / 3)


def test_a_budget_the_forced_rows_exceed_gives_an_infinite_threshold():
    scores = np.array([0.1, 0.2, 0.9])
    true_ids = np.array([0, 0, -1])
    forced = np.array([True, False, False])
    threshold, metrics = calibrate_threshold(
        scores, true_ids, np.zeros(3, dtype=int), forced=forced, max_in_scope_loss=0
    )
    assert threshold == float("inf")
    assert metrics["in_scope_accuracy"] == 0.5 and metrics["oos_recall"] == 0.0


def test_target_recall_takes_the_exact_in_scope_quantile():
    rng = np.random.default_rng(0)
    in_scope = rng.permutation(np.arange(1.0, 11.0))
    scores = np.concatenate([in_scope, [0.5, 20.0]])
    true_ids = np.array([0] * 10 + [-1, -1])
    predicted_ids = np.zeros(12, dtype=int)
    threshold, metrics = calibrate_threshold(scores, true_ids, predicted_ids, target_in_scope_recall=0.8)
    assert threshold == 8.0
    assert metrics["rule"] == "target_in_scope_recall"
    assert metrics["in_scope_abstained"] == pytest.approx(0.2)
    assert metrics["oos_recall"] == 0.5
    # No out-of-scope rows needed; 0.81 of 10 rows needs 9 kept.
    threshold, metrics = calibrate_threshold(in_scope, np.zeros(10), np.zeros(10), target_in_scope_recall=0.81)
    assert threshold == 9.0 and metrics["oos_recall"] is None


def test_target_recall_matches_a_direct_search_where_floating_point_rounds_up():
    # 0.28 * 25 is 7.000000000000001 in floating point; 7 of 25 rows is already 28%.
    for rows in (10, 20, 25, 50, 100):
        in_scope = np.arange(1.0, rows + 1)
        for recall in (0.07, 0.14, 0.28, 0.5, 0.55, 0.8, 0.9, 0.95, 0.99):
            needed = Fraction(str(recall)) * rows
            expected = min(t for t in in_scope if (in_scope <= t).sum() >= needed)
            threshold, _ = calibrate_threshold(in_scope, np.zeros(rows), np.zeros(rows), target_in_scope_recall=recall)
            assert threshold == expected, (rows, recall)


@pytest.mark.parametrize("recall", [0.0, 1.0, 1.5])
def test_target_recall_outside_zero_one_is_refused(recall):
    with pytest.raises(LmadaptError, match="strictly between 0 and 1"):
        calibrate_threshold(np.array([0.1, 0.2]), np.array([0, -1]), np.array([0, 0]), target_in_scope_recall=recall)


@pytest.mark.parametrize("loss", [-0.1, 1.0])
def test_a_budget_outside_zero_one_is_refused(loss):
    with pytest.raises(LmadaptError, match="must lie in") as raised:
        calibrate_threshold(np.array([0.1, 0.2]), np.array([0, 1]), np.array([0, 1]), max_in_scope_loss=loss)
    assert "0.02" in raised.value.fix


def brute_force_threshold(scores, true_ids, predicted_ids, forced, max_in_scope_loss):
    """The lowest candidate threshold whose lost right answers, counted row by row, fit the budget."""
    in_scope = true_ids != -1
    right = [i for i in range(len(scores)) if in_scope[i] and predicted_ids[i] == true_ids[i]]
    budget = Fraction(str(max_in_scope_loss)) * int(in_scope.sum())
    for threshold in [-np.inf, *sorted(set(scores.tolist())), np.inf]:
        lost = sum(1 for i in right if forced[i] or scores[i] > threshold)
        if lost <= budget:
            return threshold
    return np.inf


@pytest.mark.parametrize("seed", range(4))
def test_the_vectorised_sweep_matches_a_brute_force_loop(seed):
    rng = np.random.default_rng(seed)
    rows = 300
    true_ids = rng.integers(-1, 5, size=rows)
    predicted_ids = np.where(rng.random(rows) < 0.7, np.maximum(true_ids, 0), rng.integers(0, 5, size=rows))
    # Out-of-scope rows score higher on average; one decimal place makes many ties.
    scores = np.round(rng.normal(loc=np.where(true_ids == -1, 1.0, 0.0), scale=0.8), 1)
    forced = rng.random(rows) < 0.1
    for loss in (0.0, 0.02, 0.05, 0.2):
        threshold, metrics = calibrate_threshold(scores, true_ids, predicted_ids, forced=forced, max_in_scope_loss=loss)
        assert threshold == brute_force_threshold(scores, true_ids, predicted_ids, forced, loss), loss
        abstained = (scores > threshold) | forced
        assert metrics == {**abstention_metrics(true_ids, predicted_ids, abstained), "rule": "max_in_scope_loss"}


# plots


def test_score_distributions_plot_writes_a_png_also_for_an_infinite_threshold(tmp_path):
    scores = np.array([0.1, 0.2, 0.25, 0.7, 0.9])
    is_ood = np.array([False, False, False, True, True])
    for threshold, name in ((0.5, "finite.png"), (float("inf"), "infinite.png")):
        path = tmp_path / name
        plot_score_distributions(scores, is_ood, threshold, "max_softmax", path, "validation")
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 1000


def test_accuracy_recall_tradeoff_plot_writes_a_png_also_for_an_infinite_threshold(tmp_path):
    scores = np.array([0.1, 0.2, 0.3, 0.05, 0.8, 0.9])
    true_ids = np.array([0, 1, 0, -1, -1, -1])
    predicted_ids = np.array([0, 1, 1, 0, 0, 0])
    forced = np.array([False, False, False, True, False, False])
    for threshold, name in ((0.3, "finite.png"), (float("inf"), "infinite.png")):
        path = tmp_path / name
        plot_accuracy_recall_tradeoff(scores, true_ids, predicted_ids, threshold, path, "validation", forced=forced)
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 1000
