"""Mistakes made with a finished run: evaluating or predicting on data it cannot read, outputs that cannot be
written, damaged weights. Each is an error that says what, where and how to fix it, before any work is done."""

from __future__ import annotations

import shutil
import types
import warnings

import numpy as np
import pandas as pd
import pytest

import lmadapt
from lmadapt.config import DataConfig
from lmadapt.data.labels import LabelMap
from lmadapt.errors import LmadaptError
from lmadapt.evaluation.report import evaluate_run
from lmadapt.inference.predictor import Predictions
from lmadapt.runs import Run, manifest_entry, update_manifest
from lmadapt.serving.batch import predict_file
from tests.conftest import sentiment_rows, tiny_overrides, write_three_splits
from tests.unit.test_cli import run_cli
from tests.unit.test_language import chinese_rows


def train_run(tiny_bert, work, strategy: str):
    files = write_three_splits(work, sentiment_rows(360))
    settings = {"strategy.name": strategy, "train.epochs": 1}
    return lmadapt.train(
        lmadapt.load_config(None, tiny_overrides(tiny_bert, files, work / "runs", strategy, **settings))
    )


@pytest.fixture(scope="module")
def trained_run(tiny_bert, tmp_path_factory):
    """A tiny BERT fully fine-tuned for one epoch: what it predicts does not matter here, only that it loads."""
    return train_run(tiny_bert, tmp_path_factory.mktemp("run-errors"), "full")


@pytest.fixture
def texts_file(tmp_path):
    path = tmp_path / "texts.csv"
    sentiment_rows(20).to_csv(path, index=False)
    return path


class Untouchable:
    """A predictor that fails the test if anything is predicted."""

    def scores(self, *args, **kwargs):
        raise AssertionError("predicted before the mistake was found")


def untouchable_run(run):
    loaded = lmadapt.load(run.path)
    loaded.predictor = Untouchable()  # the cached predictor, replaced
    return loaded


def test_evaluate_refuses_texts_the_backbone_cannot_read(trained_run, tmp_path, monkeypatch, capsys):
    data = tmp_path / "chinese.csv"
    chinese_rows(60).to_csv(data, index=False)
    with pytest.raises(LmadaptError) as error:
        evaluate_run(untouchable_run(trained_run), str(data), output=tmp_path / "eval")
    assert error.value.where == str(data)
    assert "cannot read these texts" in error.value.what and "e5-multilingual" in error.value.fix
    assert not (tmp_path / "eval").exists()
    code, _, err = run_cli(
        monkeypatch, capsys, "evaluate", trained_run.path, "--data", data, "--output", tmp_path / "e"
    )
    assert code == 2 and "cannot read these texts" in err and str(data) in err and "Traceback" not in err


def test_predict_outputs_that_cannot_be_written_are_refused_before_predicting(trained_run, texts_file, tmp_path):
    run = untouchable_run(trained_run)
    folder = tmp_path / "scored.csv"
    folder.mkdir()
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    cases = [
        (folder, "--output is an existing folder, where a file is written", f"--output {folder / 'scored.csv'}"),
        (blocker / "scored.csv", f"--output lies below {blocker}, which is a file", "a folder that exists"),
        (texts_file, "--output would overwrite --input", "--output " + str(tmp_path / "texts-scored.csv")),
        (tmp_path / "scored.txt", "cannot tell the output format from 'scored.txt'", ".csv, .tsv, .jsonl or .parquet"),
    ]
    for output, what, fix in cases:
        with pytest.raises(LmadaptError) as error:
            predict_file(run, str(texts_file), output, predictor=Untouchable())
        assert error.value.where == str(output) and what in error.value.what and fix in error.value.fix, output
    assert blocker.read_text() == "keep me" and not any(folder.iterdir())
    assert pd.read_csv(texts_file).equals(sentiment_rows(20))


def test_evaluate_outputs_that_cannot_be_written_are_refused_before_predicting(trained_run, texts_file, tmp_path):
    run = untouchable_run(trained_run)
    existing = tmp_path / "metrics.txt"
    existing.write_text("keep me")
    with pytest.raises(LmadaptError) as error:
        evaluate_run(run, str(texts_file), output=existing)
    assert error.value.where == str(existing) and "--output is an existing file, where a folder is written" in str(
        error.value
    )
    assert error.value.fix == f"name a folder as --output, e.g. --output {tmp_path / f'{run.name}-texts'}"
    with pytest.raises(LmadaptError, match="lies below .*metrics.txt, which is a file"):
        evaluate_run(run, str(texts_file), output=existing / "evaluation")
    assert existing.read_text() == "keep me"


def test_the_cli_refuses_outputs_in_a_line_or_two(trained_run, texts_file, tmp_path, monkeypatch, capsys):
    def no_loading(*args, **kwargs):
        raise AssertionError("the model loaded before --output was checked")

    monkeypatch.setattr(Run, "inference", no_loading)
    predict = ["predict", trained_run.path, "a great film", "--input", texts_file, "--output", tmp_path]
    code, out, err = run_cli(monkeypatch, capsys, *predict)
    assert code == 2 and "--output is an existing folder" in err and "Traceback" not in err and out == ""
    code, _, err = run_cli(
        monkeypatch, capsys, "evaluate", trained_run.path, "--data", texts_file, "--output", texts_file
    )
    assert code == 2 and "--output is an existing file" in err and "Traceback" not in err


def test_data_errors_name_the_options_evaluate_and_predict_have(trained_run, texts_file, tmp_path, monkeypatch, capsys):
    path = trained_run.path
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", path, "--data", texts_file, "--label-column", "sentiment")
    assert code == 2 and "column 'sentiment' not found; the data has columns: text, label" in err
    assert "fix: name the file's label column with --label-column NAME" in err and "--set" not in err
    scored = tmp_path / "scored.csv"
    code, _, err = run_cli(
        monkeypatch, capsys, "predict", path, "--input", texts_file, "--output", scored, "--text-column", "review"
    )
    assert code == 2 and "column 'review' not found" in err
    assert "fix: name the file's text column with --text-column NAME" in err and "--set" not in err
    with_empty = tmp_path / "with_empty.csv"
    pd.DataFrame({"text": ["a great film", " "], "label": ["positive", "negative"]}).to_csv(with_empty, index=False)
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", path, "--data", with_empty)
    assert code == 2 and "1 empty text(s) in column 'text'" in err
    assert "fix: fill or remove those rows" in err and "data.drop_empty" not in err
    code, _, err = run_cli(monkeypatch, capsys, "evaluate", path, "--data", tmp_path / "texts.txt")
    assert code == 2 and "fix: give the file a .csv, .tsv, .jsonl or .parquet name" in err and "data.format" not in err


WEIGHTS = {"full": "model.safetensors", "lora": "adapter_model.safetensors", "head": "delta.safetensors"}


@pytest.mark.parametrize("strategy", list(WEIGHTS))
def test_weights_cut_short_are_an_error_naming_the_file(
    strategy, trained_run, tiny_bert, tmp_path, monkeypatch, capsys
):
    source = trained_run if strategy == "full" else train_run(tiny_bert, tmp_path, strategy)
    damaged = tmp_path / "damaged"
    shutil.copytree(source.path, damaged)
    weights = damaged / "model" / WEIGHTS[strategy]
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    update_manifest(damaged, {f"model/{weights.name}": manifest_entry(weights)})  # so the manifest cannot tell
    run = lmadapt.load(damaged)
    with pytest.raises(LmadaptError) as error:
        run.predict(["a great film"])
    assert error.value.where == str(weights) and "the run's model weights cannot be read" in error.value.what
    assert error.value.fix == f"restore the run folder {damaged} from a copy, or retrain it"
    if strategy == "full":
        code, _, err = run_cli(monkeypatch, capsys, "predict", damaged, "a great film")
        assert code == 2 and f"{weights}: the run's model weights cannot be read" in err and "Traceback" not in err


def test_scoring_a_file_for_many_labels_adds_the_columns_at_once(tmp_path):
    labels = LabelMap([f"intent_{i:03d}" for i in range(151)])
    run = types.SimpleNamespace(
        data_config=lambda **_: DataConfig(drop_empty=True), labels=labels, check_reads=lambda *a, **k: None
    )
    rng = np.random.default_rng(0)

    class RandomPredictor:
        def predictions(self, texts, pairs=None, progress=False, abstain=True):
            scores = rng.dirichlet(np.ones(len(labels)), size=len(texts))
            return Predictions(scores, [labels.labels[j] for j in scores.argmax(axis=1)])

    source, output = tmp_path / "texts.csv", tmp_path / "scored.csv"
    pd.DataFrame({"text": ["first", " ", "third"], "id": [1, 2, 3]}).to_csv(source, index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.PerformanceWarning)
        assert predict_file(run, str(source), output, predictor=RandomPredictor()) == 3
    scored = pd.read_csv(output)
    score_columns = [f"score_{label}" for label in labels.labels]
    assert list(scored.columns) == ["text", "id", "predicted_label", *score_columns]
    assert scored["id"].tolist() == [1, 2, 3]
    assert scored.loc[1, score_columns].isna().all() and pd.isna(scored.loc[1, "predicted_label"])  # the empty text
    for row in (0, 2):
        best = scored.loc[row, score_columns].astype(float).idxmax().removeprefix("score_")
        assert scored.loc[row, "predicted_label"] == best
        assert scored.loc[row, score_columns].sum() == pytest.approx(1.0, abs=1e-4)
