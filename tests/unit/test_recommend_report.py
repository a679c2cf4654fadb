"""The evaluation report: intervals against scipy and hand values, the summary rows, the files it writes."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lmadapt.apps.recommend import report
from lmadapt.errors import LmadaptError


def test_t_interval_matches_scipy_and_hand_values():
    values = [0.30, 0.32, 0.34]
    mean, sd, low, high = report.t_interval(values)
    assert mean == pytest.approx(0.32)
    assert sd == pytest.approx(0.02)  # n - 1 in the denominator
    # By hand: t(0.975, 2) = 4.302653; half width 4.302653 x 0.02 / sqrt(3).
    assert high - mean == pytest.approx(4.302653 * 0.02 / math.sqrt(3), rel=1e-6)
    expected = stats.t.interval(0.95, 2, loc=mean, scale=stats.sem(values))
    assert (low, high) == pytest.approx(expected)


def test_t_interval_needs_two_values():
    with pytest.raises(ValueError, match="two or more"):
        report.t_interval([0.3])


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    values = np.random.default_rng(1).random(500)
    low, high = report.bootstrap_interval(values, seed=3)
    assert (low, high) == report.bootstrap_interval(values, seed=3)
    assert low < values.mean() < high
    # The percentile interval of a mean is close to the normal one: +-1.96 standard errors.
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values))
    assert high - low == pytest.approx(2 * half, rel=0.15)


def test_bootstrap_of_constant_values_is_a_point():
    assert report.bootstrap_interval([1.0, 1.0, 1.0]) == (1.0, 1.0)


def seed_result(ndcg: float, hr: float) -> dict:
    return {"ndcg_at_10": ndcg, "hr_at_10": hr, "coverage_at_10": 0.5, "users": 3}


def test_summary_over_seeds_uses_the_t_interval():
    row = report.summarise_model("ease", [seed_result(0.30, 0.5), seed_result(0.32, 0.6), seed_result(0.34, 0.7)])
    assert row["interval"] == report.T_OVER_SEEDS and row["seeds"] == 3
    assert row["ndcg_at_10"] == pytest.approx(0.32)
    assert row["ndcg_at_10_std"] == pytest.approx(0.02)
    assert row["ndcg_at_10_ci"] == pytest.approx(list(report.t_interval([0.30, 0.32, 0.34])[2:]))
    assert "recall_at_10" not in row  # no seed has it


def test_one_seed_is_bootstrapped_over_its_users():
    per_user = pd.DataFrame({"user": ["a", "b", "c", "d"], "ndcg_at_10": [0.0, 1.0, 0.5, 0.5], "hr_at_10": 1.0})
    result = {"ndcg_at_10": 0.5, "hr_at_10": 1.0, "coverage_at_10": 0.2, "users": 4, "per_user": per_user}
    row = report.summarise_model("bpr", [result])
    assert row["interval"] == report.BOOTSTRAP_OVER_USERS
    low, high = row["ndcg_at_10_ci"]
    assert 0.0 <= low < 0.5 < high <= 1.0
    assert row["hr_at_10_ci"] == [1.0, 1.0]
    assert row["coverage_at_10_ci"] is None  # not a per-user figure
    # A stored row keeps its intervals in `bootstrap` instead of the per-user values.
    stored = {**result, "bootstrap": report.bootstrap_intervals(result)}
    del stored["per_user"]
    assert report.summarise_model("bpr", [stored])["ndcg_at_10_ci"] == pytest.approx([low, high], abs=1e-6)


def test_one_seed_without_per_user_values_has_no_interval():
    row = report.summarise_model("popularity", [seed_result(0.2, 0.4)])
    assert row["interval"] == report.NONE and row["ndcg_at_10_ci"] is None
    assert report.markdown_table([row], ["ndcg_at_10"]).splitlines()[-1].endswith("| 0.2000 |")


def test_no_results_is_a_clear_error():
    with pytest.raises(LmadaptError, match="no results for model 'x'"):
        report.summarise_model("x", [])


def test_markdown_table_has_a_column_per_metric():
    rows = report.summarise({"ease": [seed_result(0.30, 0.5), seed_result(0.34, 0.7)]})
    lines = report.markdown_table(rows, ["ndcg_at_10", "hr_at_10", "coverage_at_10"]).splitlines()
    assert lines[0] == "| model | seeds | interval | NDCG@10 | HR@10 | Cov@10 |"
    assert lines[1] == "|---|---|---|---|---|---|"
    cells = [cell.strip() for cell in lines[2].strip("|").split("|")]
    low, high = rows[0]["ndcg_at_10_ci"]
    assert cells[:4] == ["ease", "2", "t over seeds", f"0.3200 [{low:.4f}, {high:.4f}]"]
    with pytest.raises(LmadaptError, match="unknown metric"):
        report.markdown_table(rows, ["ndcg_at_11"])


def test_write_report_writes_json_markdown_and_png(tmp_path):
    results = {
        "popularity": [seed_result(0.10, 0.2), seed_result(0.12, 0.25), seed_result(0.11, 0.22)],
        "ease": [seed_result(0.30, 0.5), seed_result(0.32, 0.6), seed_result(0.34, 0.7)],
    }
    paths = report.write_report(results, tmp_path / "out", title="ml-100k temporal")
    document = json.loads(paths["json"].read_text())
    assert [row["model"] for row in document["models"]] == ["popularity", "ease"]
    assert document["map_normaliser"] == "min(R, k)" and document["confidence"] == 0.95
    markdown = paths["markdown"].read_text()
    assert markdown.startswith("# ml-100k temporal") and "| ease | 3 | t over seeds |" in markdown
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
