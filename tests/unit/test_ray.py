"""Ray: batch prediction with Ray Data and compare's strategies as Ray tasks, on a real two-node loopback cluster."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest

import lmadapt
from lmadapt.errors import LmadaptError
from lmadapt.serving.ray_batch import node_run_folder, run_fingerprint
from tests.conftest import sentiment_rows, tiny_overrides, write_three_splits


@pytest.fixture(scope="module")
def tiny_run(tiny_bert, tmp_path_factory):
    work = tmp_path_factory.mktemp("ray-run")
    files = write_three_splits(work, sentiment_rows(360))
    return lmadapt.train(
        lmadapt.load_config(None, tiny_overrides(tiny_bert, files, work / "runs", "ray", **{"train.epochs": 3}))
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Two Parquet files of 70 and 45 rows with an id column beside the text, and the same rows as CSV and JSONL."""
    folder = tmp_path_factory.mktemp("ray-inputs")
    frame = sentiment_rows(115, seed=7).drop(columns="label")
    frame.insert(0, "id", range(len(frame)))
    (folder / "parquet").mkdir()
    frame[:70].to_parquet(folder / "parquet" / "a.parquet", index=False)
    frame[70:].to_parquet(folder / "parquet" / "b.parquet", index=False)
    frame.to_csv(folder / "all.csv", index=False)
    frame.to_json(folder / "all.jsonl", orient="records", lines=True)
    return folder, frame


def test_ray_prediction_matches_local_prediction_row_by_row_and_resumes_by_part(
    ray_cluster, tiny_run, inputs, tmp_path
):
    folder, frame = inputs
    output = tmp_path / "scored"
    report = lmadapt.predict_on_ray(tiny_run, str(folder / "parquet"), output, ray_cluster, part_rows=40)
    # 70 rows: 2 parts, 45: 2
    assert report == {"rows": 115, "parts": 4, "parts_before": 0, "output": str(output)}
    assert sorted(p.name for p in output.glob("part-*.parquet")) == [f"part-{i:05d}.parquet" for i in range(4)]
    scored = pd.read_parquet(output)  # the folder of parts, read as one table
    lmadapt.predict_file(tiny_run, str(folder / "all.csv"), tmp_path / "local.csv")
    local = pd.read_csv(tmp_path / "local.csv")
    assert list(scored.columns) == list(local.columns)
    assert list(scored["id"]) == list(local["id"]) and list(scored["text"]) == list(local["text"])
    assert list(scored["predicted_label"]) == list(local["predicted_label"])
    for label in ("negative", "positive"):
        assert (scored[f"score_{label}"] - local[f"score_{label}"]).abs().max() < 1e-5
    # The nodes (both on this machine) unpacked the run once, into a folder named by its checksum, kept for the next
    # prediction of the same run; no actor's partial copy is left behind.
    unpacked = node_run_folder(run_fingerprint(tiny_run))
    assert (unpacked / tiny_run.path.name / "manifest.json").is_file()
    assert not list(unpacked.parent.glob(f".{unpacked.name}-*"))

    # A rerun writes only the parts not written yet.
    (output / "part-00003.parquet").unlink()
    again = lmadapt.predict_on_ray(tiny_run, str(folder / "parquet"), output, ray_cluster, part_rows=40)
    assert again == {"rows": 5, "parts": 1, "parts_before": 3, "output": str(output)}
    assert pd.read_parquet(output).equals(scored)
    assert lmadapt.predict_on_ray(tiny_run, str(folder / "parquet"), output, ray_cluster, part_rows=40)["parts"] == 0


def test_an_output_folder_of_another_input_is_refused_and_kept(ray_cluster, tiny_run, inputs, tmp_path):
    folder, _ = inputs
    output = tmp_path / "scored"
    assert lmadapt.predict_on_ray(tiny_run, str(folder / "all.jsonl"), output, ray_cluster)["rows"] == 115
    before = {p.name: p.read_bytes() for p in output.iterdir()}
    with pytest.raises(LmadaptError) as refused:
        lmadapt.predict_on_ray(tiny_run, str(folder / "all.csv"), output, ray_cluster)
    assert "predictions of another run, input or settings (inputs differ)" in refused.value.what
    assert refused.value.where == str(output / "_predictions.json")
    assert "new --output folder" in refused.value.fix
    assert {p.name: p.read_bytes() for p in output.iterdir()} == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(LmadaptError, match="not empty and has no _predictions.json"):
        lmadapt.predict_on_ray(tiny_run, str(folder / "parquet"), tmp_path / "other", ray_cluster)
    with pytest.raises(LmadaptError) as mixed:
        lmadapt.predict_on_ray(tiny_run, str(folder / "all.*"), tmp_path / "mixed", ray_cluster)
    assert "the input mixes formats (csv, jsonl)" in mixed.value.what and "of one format" in mixed.value.fix


def test_a_missing_text_column_is_named_with_its_file(ray_cluster, tiny_run, tmp_path):
    pd.DataFrame({"body": ["a great film"]}).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(LmadaptError) as refused:
        lmadapt.predict_on_ray(tiny_run, str(tmp_path / "x.parquet"), tmp_path / "out", ray_cluster)
    assert "no column 'text' (columns: body)" in refused.value.what
    assert refused.value.where == str(tmp_path / "x.parquet") and "--text-column" in refused.value.fix


def test_an_unreachable_address_says_where_and_how_to_start_one(tmp_path):
    from lmadapt.cluster import _free_port, connect

    address = f"127.0.0.1:{_free_port()}"
    with pytest.raises(LmadaptError) as refused:
        connect(address)
    assert f"no Ray cluster answers at {address}" in refused.value.what
    assert refused.value.where == "--ray" and "ray start --head" in refused.value.fix
    with pytest.raises(LmadaptError, match="'nowhere' is not a Ray address"):
        connect("nowhere")


def test_without_ray_installed_the_fix_is_the_extra(monkeypatch, capsys, tiny_run, tmp_path):
    from tests.unit.test_cli import run_cli

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    pd.DataFrame({"text": ["a great film"]}).to_csv(tmp_path / "x.csv", index=False)
    code, out, err = run_cli(
        monkeypatch,
        capsys,
        "predict",
        tiny_run.path,
        "--input",
        tmp_path / "x.csv",
        "--output",
        tmp_path / "o",
        "--ray",
        "local",
    )
    assert code == 2
    assert "--ray: Ray is not installed" in out + err and "fix: pip install 'lmadapt[ray]'" in out + err
    assert "Traceback" not in out + err and not (tmp_path / "o").exists()


def test_compare_on_ray_gives_the_local_leaderboard(ray_cluster, tiny_bert, tmp_path, monkeypatch):
    files = write_three_splits(tmp_path, sentiment_rows(360))
    base = lmadapt.load_config(
        None, tiny_overrides(tiny_bert, files, tmp_path / "unused", "cmp", **{"train.epochs": 3})
    )
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as a Ray task of one CPU runs: the same sums in the same order
    local = lmadapt.compare_strategies(base, ["head", "bitfit"], tmp_path / "local", progress=lambda _: None)
    on_ray = lmadapt.compare_strategies(
        base, ["head", "bitfit"], tmp_path / "ray", progress=lambda _: None, ray=ray_cluster, ray_cpus=1
    )
    figures = ("strategy", "accuracy", "macro_f1", "trainable_params")
    assert [{k: row[k] for k in figures} for row in on_ray] == [{k: row[k] for k in figures} for row in local]
    assert all("error" not in row and row["texts_per_s"] > 0 for row in on_ray)
    saved = json.loads((tmp_path / "ray" / "leaderboard.json").read_text())
    assert [row["accuracy"] for row in saved["rows"]] == [
        row["accuracy"] for row in json.loads((tmp_path / "local" / "leaderboard.json").read_text())["rows"]
    ]
    # The rows are kept as locally: a rerun reuses them.
    again = lmadapt.compare_strategies(
        base, ["head", "bitfit"], tmp_path / "ray", progress=lambda _: None, ray=ray_cluster
    )
    assert all(row.get("reused") for row in again)


def test_tune_on_ray_runs_the_trials_as_tasks_and_trains_the_best_here(ray_cluster, tiny_bert, tmp_path):
    import optuna
    import torch

    from tests.unit.test_tune import SPACE, overrides

    files = write_three_splits(tmp_path, sentiment_rows(360))
    config = lmadapt.load_config(None, overrides(tiny_bert, files, tmp_path))
    output, lines = tmp_path / "search", []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a Ray task of one CPU trains: the final run repeats the best trial's sums exactly
    try:
        result = lmadapt.tune(
            config,
            budget_minutes=10,
            trials=2,
            output=output,
            search_space=SPACE,
            progress=lines.append,
            ray=ray_cluster,
            ray_cpus=1,
        )
    finally:
        torch.set_num_threads(threads)
    study = optuna.load_study(study_name="lmadapt-tune", storage=f"sqlite:///{output / 'study.db'}")
    # Both trials run at once on the two one-CPU nodes, so neither finishes before the other could be pruned.
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"] and result.completed == 2
    # Each task reported its epochs into the study and kept its figures there.
    assert all(sorted(t.intermediate_values) == [1, 2] and t.user_attrs["train_rows"] == 240 for t in study.trials)
    assert all(t.value == t.intermediate_values[2] for t in study.trials)
    best = study.best_trial
    assert (result.best_value, result.best_params) == (best.value, best.params)
    assert sorted(line.split(":")[0] for line in lines if line.startswith("trial ")) == ["trial 0", "trial 1"]
    recipe = lmadapt.load_config(output / "best.yaml")
    assert recipe.train.learning_rate == best.params["train.learning_rate"]
    assert recipe.train.batch_size == best.params["train.batch_size"]
    # The final run trains here on the same rows with the best values: the best trial's score again.
    run = lmadapt.load(output / config.name)
    assert run.path == result.run.path and run.metrics["validation"]["macro_f1"] == best.value
    assert not (output / ".trials").exists(), "trial run folders are scratch"


def test_tune_with_an_unreachable_ray_address_stops_before_the_folder(tiny_bert, tmp_path, monkeypatch, capsys):
    from lmadapt.cluster import _free_port
    from tests.conftest import write_recipe
    from tests.unit.test_cli import run_cli
    from tests.unit.test_tune import overrides

    files = write_three_splits(tmp_path, sentiment_rows(360))
    recipe = write_recipe(tmp_path / "tune.yaml", overrides(tiny_bert, files, tmp_path))
    address = f"127.0.0.1:{_free_port()}"
    output = tmp_path / "search"
    code, out, err = run_cli(
        monkeypatch, capsys, "tune", recipe, "--budget-minutes", "5", "--output", output, "--ray", address
    )
    assert code == 2 and "Traceback" not in out + err
    assert f"--ray: no Ray cluster answers at {address}" in err and "fix: start one with `ray start --head`" in err
    assert not output.exists()
