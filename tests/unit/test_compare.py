"""`lmadapt compare`: real runs of cheap strategies on a tiny model, each in its own process."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import lmadapt
from lmadapt.compare.leaderboard import (
    FILES,
    Limits,
    failure_reason,
    pareto_front,
    recommend,
    split_settings,
    time_limit,
)
from lmadapt.errors import LmadaptError
from tests.conftest import REPO, sentiment_rows, tiny_overrides, write_three_splits

STRATEGIES = ["head", "bitfit", "full", "zeroshot_lm"]  # zeroshot_lm fails: the tiny BERT is no causal LM


@pytest.fixture(scope="module")
def compared(tiny_bert, tmp_path_factory):
    work = tmp_path_factory.mktemp("compare")
    files = write_three_splits(work, sentiment_rows(360))
    base = lmadapt.load_config(None, tiny_overrides(tiny_bert, files, work / "unused", "cmp"))
    output = work / "compare"
    rows = lmadapt.compare_strategies(base, STRATEGIES, output, Limits(memory_mb=1e9), progress=lambda _: None)
    return base, output, {row["strategy"]: row for row in rows}


def test_a_comparison_measures_every_strategy_and_writes_every_file(compared):
    _, output, rows = compared
    trained = [rows[name] for name in ("head", "bitfit", "full")]
    for row in trained:
        assert "error" not in row, row
        assert 0 <= row["accuracy"] <= 1 and row["texts_per_s"] > 0 and row["latency_ms"] > 0
        assert row["peak_rss_mb"] > 100  # a whole process with torch loaded, measured in it
        assert lmadapt.load(row["run"]).metrics["test"]["accuracy"] == row["accuracy"]
    assert rows["full"]["accuracy"] >= 0.8
    assert rows["head"]["trainable_pct"] < rows["bitfit"]["trainable_pct"] < rows["full"]["trainable_pct"] == 100
    assert "causal LM" in rows["zeroshot_lm"]["error"]
    for name in FILES:
        assert (output / name).is_file(), name
    table = pd.read_csv(output / "leaderboard.csv")
    finished = table[table["error"].isna()]
    assert list(finished["accuracy"]) == sorted(finished["accuracy"], reverse=True)
    assert table["strategy"].iloc[-1] == "zeroshot_lm"  # failed rows last
    page = (output / "leaderboard.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "causal LM" in page and "<script>" in page
    saved = json.loads((output / "leaderboard.json").read_text())
    assert saved["advice"][0].startswith("best quality: ") and "best within" in saved["advice"][1]
    # Something is on each Pareto front, and the most accurate strategy always is.
    best = max(trained, key=lambda r: r["accuracy"])
    assert best["pareto_params"] and best["pareto_time"]


def test_a_second_comparison_reuses_finished_rows(compared):
    base, output, first = compared
    trained_at = {name: (output / "runs" / name / "manifest.json").stat().st_mtime_ns for name in ("head", "full")}
    # As the worker writes it, if the comparison stopped before naming the row.
    head_row = output / "rows" / "head.json"
    head_row.write_text(json.dumps({k: v for k, v in json.loads(head_row.read_text()).items() if k != "strategy"}))
    rows = {
        r["strategy"]: r
        for r in lmadapt.compare_strategies(base, ["head", "full", "zeroshot_lm"], output, progress=print)
    }
    assert rows["head"]["reused"] and rows["full"]["reused"] and "reused" not in rows["zeroshot_lm"]
    assert rows["full"]["accuracy"] == first["full"]["accuracy"]
    for name, stamp in trained_at.items():
        assert (output / "runs" / name / "manifest.json").stat().st_mtime_ns == stamp  # not retrained


def test_a_setting_for_one_strategy_changes_its_config_alone_and_reruns_it(compared):
    base, output, _ = compared
    head_trained_at = (output / "runs" / "head" / "manifest.json").stat().st_mtime_ns
    settings = {"head": ["train.learning_rate=0.01"]}
    rows = {r["strategy"]: r for r in lmadapt.compare_strategies(base, ["head", "full"], output, settings=settings)}
    assert rows["full"]["reused"] and "reused" not in rows["head"]  # head's config changed: it ran again
    assert (output / "runs" / "head" / "manifest.json").stat().st_mtime_ns != head_trained_at
    assert lmadapt.load(rows["head"]["run"]).config["train"]["learning_rate"] == 0.01
    assert lmadapt.load(rows["full"]["run"]).config["train"]["learning_rate"] != 0.01
    with pytest.raises(LmadaptError, match="settings given for 'lora', which is not compared"):
        lmadapt.compare_strategies(base, ["head"], output, settings={"lora": ["train.epochs=1"]})


def test_settings_split_into_common_ones_and_one_strategys():
    common, own = split_settings(
        ["train.epochs=3", "data.train=builtin:sst2", "setfit:data.shots_per_class=16", "setfit:train.epochs=1"]
    )
    assert common == ["train.epochs=3", "data.train=builtin:sst2"]  # a colon in a value is no strategy prefix
    assert own == {"setfit": ["data.shots_per_class=16", "train.epochs=1"]}


def test_every_public_api_name_is_callable_after_every_subpackage_is_imported():
    import importlib
    import pkgutil

    for module in pkgutil.walk_packages(lmadapt.__path__, "lmadapt."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    for name in set(lmadapt.__all__) - {"__version__"}:
        assert callable(getattr(lmadapt, name)), name


def test_a_strategy_over_its_time_limit_is_an_error_row(compared, tmp_path):
    base, _, _ = compared
    (row,) = lmadapt.compare_strategies(base, ["full"], tmp_path, Limits(minutes_per_strategy=0.01), progress=print)
    assert row["error"].startswith("stopped at its time limit")
    assert not (tmp_path / "rows" / "full.json").exists()  # an error row is not kept for reuse


def bad_data(folder) -> dict[str, tuple]:
    """Data files a user gets wrong, each with what its error must say (what, where, fix)."""
    ragged = folder / "ragged.csv"
    ragged.write_text("text,label\na fine film,positive\na dull, long film,negative\n")
    no_label = folder / "no_label.csv"
    sentiment_rows(40).rename(columns={"label": "sentiment"}).to_csv(no_label, index=False)
    return {
        "missing": (folder / "missing.csv", ["data file not found", "missing.csv", "fix: check the path"]),
        "ragged": (ragged, [f"{ragged}, line 3", "malformed CSV (expected 2 fields, saw 3)", "fix: quote fields"]),
        "no label": (no_label, [str(no_label), "column 'label' not found", "fix: set data.label_column"]),
    }


def snapshot(folder) -> dict:
    """Every file under `folder` with its bytes and modification time."""
    return {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize("case", ["missing", "ragged", "no label"])
def test_bad_data_stops_a_comparison_before_it_starts_and_keeps_the_earlier_leaderboard(
    case, tmp_path, monkeypatch, capsys
):
    from lmadapt.compare.leaderboard import write_leaderboard
    from tests.unit.test_cli import run_cli

    data, expected = bad_data(tmp_path)[case]
    output = tmp_path / "compare"
    figures = dict.fromkeys(("accuracy", "macro_f1", "trainable_pct", "train_s", "peak_rss_mb", "texts_per_s"), 1.0)
    earlier = [{"strategy": "head", **figures, "trainable_params": 10}, {"strategy": "full", "error": "out of memory"}]
    write_leaderboard(earlier, output, Limits())
    (output / "rows").mkdir()
    (output / "rows" / "head.json").write_text(json.dumps(earlier[0]))
    before = snapshot(output)

    code, _, err = run_cli(
        monkeypatch, capsys, "compare", "--data", data, "--strategies", "head,full", "--output", output
    )
    assert code == 2 and "Traceback" not in err
    for text in expected:
        assert text in err, err
    assert snapshot(output) == before  # no error rows over the earlier leaderboard, no file touched


def test_a_misspelt_data_file_creates_no_output_folder(tmp_path, monkeypatch, capsys):
    from tests.unit.test_cli import run_cli

    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "compare", "--data", "reveiws.csv")
    assert code == 2 and "data file not found: reveiws.csv" in err and "fix: check the path" in err
    assert list(tmp_path.iterdir()) == []  # not even the default runs/compare


def test_a_workers_data_error_is_its_row_and_names_the_line(tmp_path):
    from lmadapt.compare.leaderboard import run_strategy

    data, expected = bad_data(tmp_path)["ragged"]
    config = lmadapt.load_config(None, [f"data.train={data}", f"output_dir={tmp_path}"])
    row = run_strategy(config, tmp_path / "rows", None)
    for text in expected:
        assert text in row["error"], row


def test_a_worker_that_dies_says_how():
    bar = "70%|███████   | 112/160 [05:34<02:23,  2.98s/it]"
    crash = f"{bar}\nTraceback (most recent call last):\n  File x\nRuntimeError: bad dtype\n"
    assert failure_reason(1, crash) == "RuntimeError: bad dtype"
    assert failure_reason(-9, bar) == "killed by SIGKILL (out of memory?)"
    assert failure_reason(-11, bar) == "killed by SIGSEGV"
    assert failure_reason(3, bar) == f"exit code 3; last output: {bar}"


def test_the_overall_budget_skips_what_could_not_finish():
    assert time_limit(Limits(minutes_per_strategy=10, total_minutes=15), elapsed_s=0) == (600, None)
    limit, skipped = time_limit(Limits(minutes_per_strategy=10, total_minutes=15), elapsed_s=6 * 60)
    assert limit is None and "9.0 min of the overall budget left" in skipped
    assert time_limit(Limits(total_minutes=15), elapsed_s=5 * 60) == (600, None)
    assert "spent" in time_limit(Limits(total_minutes=15), elapsed_s=16 * 60)[1]
    assert time_limit(Limits(), elapsed_s=1e6) == (None, None)


def test_the_pareto_front_of_a_fixed_table():
    # (cost, quality): cheaper and better wins; equal points are both on the front.
    points = [(1, 0.80), (2, 0.90), (3, 0.85), (0.5, 0.70), (2, 0.90), (1, 0.75)]
    assert pareto_front(points) == {0, 1, 3, 4}


def test_the_recommendation_respects_the_stated_limits():
    rows = [
        {"strategy": "full", "accuracy": 0.92, "train_s": 600, "peak_rss_mb": 3000},
        {"strategy": "lora", "accuracy": 0.90, "train_s": 300, "peak_rss_mb": 1500},
        {"strategy": "head", "accuracy": 0.80, "train_s": 30, "peak_rss_mb": 900},
        {"strategy": "prefix", "error": "out of memory"},
    ]
    assert recommend(rows, Limits()) == ["best quality: full (92.00% accuracy)"]
    assert recommend(rows, Limits(memory_mb=2000))[1] == "best within 2000 MB peak memory: lora (90.00% accuracy)"
    advice = recommend(rows, Limits(memory_mb=2000, train_minutes=1))[1]
    assert advice == "best within 2000 MB peak memory and 1 min training: head (80.00% accuracy)"
    assert recommend(rows, Limits(memory_mb=100))[1] == "no strategy stays within 100 MB peak memory"


def test_each_strategy_keeps_its_own_defaults_unless_the_user_chose_otherwise():
    from lmadapt.compare.fewshot import variant

    recipe = lmadapt.load_config(REPO / "configs" / "sentiment" / "minilm_full.yaml")  # learning_rate 1e-4: full's
    lora = variant(recipe, "lora")
    assert lora.strategy_name == "lora" and lora.train.learning_rate is None  # LoRA's own default (1e-3)
    chosen = variant(
        lmadapt.load_config(REPO / "configs" / "sentiment" / "minilm_full.yaml", ["train.learning_rate=3e-4"]), "lora"
    )
    assert chosen.train.learning_rate == 3e-4
