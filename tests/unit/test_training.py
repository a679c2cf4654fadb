"""The training engine, run folder and prediction, end to end on tiny random-weight models."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback

import lmadapt
from lmadapt.errors import LmadaptError
from lmadapt.runs import load_run, write_run_folder
from tests.conftest import sentiment_rows, tiny_overrides, write_three_splits

RUN_FILES = {
    "model",
    "labels.json",
    "config.yaml",
    "metrics.json",
    "confusion.png",
    "training_curves.png",
    "train_log.jsonl",
    "manifest.json",
}


def train_tiny(tiny_bert, files, out, name="tiny", **extra):
    return lmadapt.train(lmadapt.load_config(None, tiny_overrides(tiny_bert, files, out, name, **extra)))


def test_full_fine_tuning_writes_a_complete_verified_run(tiny_bert, sentiment_files, tmp_path):
    run = train_tiny(tiny_bert, sentiment_files, tmp_path / "runs")
    assert {p.name for p in run.path.iterdir()} == RUN_FILES
    assert not [p for p in run.path.parent.iterdir() if p.name.startswith(".")], "staging or checkpoints left behind"
    metrics = run.metrics
    assert metrics["test"]["accuracy"] >= 0.9, metrics["test"]
    assert metrics["parameters"]["trainable"] == metrics["parameters"]["total"] > 0
    assert metrics["training"]["samples_per_s"] > 0 and metrics["peak_rss_mb"] > 0
    assert metrics["data"]["rows"] == {"train": 240, "validation": 60, "test": 60}
    log_lines = [json.loads(line) for line in (run.path / "train_log.jsonl").read_text().splitlines()]
    assert any("loss" in entry for entry in log_lines) and any("eval_macro_f1" in entry for entry in log_lines)
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert "model/model.safetensors" in manifest["files"] and manifest["versions"]["lmadapt"] == lmadapt.__version__
    assert not list((run.path / "model").glob("*.bin")), "weights must be safetensors"


def test_run_folder_loads_with_plain_transformers(tiny_bert, sentiment_files, tmp_path):
    run = train_tiny(tiny_bert, sentiment_files, tmp_path / "runs")
    model = AutoModelForSequenceClassification.from_pretrained(run.path / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(run.path / "model")
    texts = ["the film was great", "a dull and boring plot"]
    with torch.no_grad():
        plain = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.softmax(-1).numpy()
    ours = lmadapt.load(run.path).predictor.scores(texts)
    assert np.allclose(plain, ours, atol=1e-5)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert [p["label"] for p in lmadapt.load(run.path).predict(texts)] == ["positive", "negative"]


def test_early_stopping_stops_and_restores_the_best_checkpoint(tiny_bert, sentiment_files, tmp_path):
    # A random tiny BERT sits on a plateau for its first epochs: patience 1 stops it early.
    run = train_tiny(
        tiny_bert,
        sentiment_files,
        tmp_path / "runs",
        **{"train.early_stopping_patience": 1, "train.learning_rate": 1e-4},
    )
    assert run.metrics["training"]["epochs"] < 10
    evals = [json.loads(line) for line in (run.path / "train_log.jsonl").read_text().splitlines()]
    best = max(e["eval_macro_f1"] for e in evals if "eval_macro_f1" in e)
    assert run.metrics["training"]["best_checkpoint_metric"] == best
    assert run.metrics["validation"]["macro_f1"] == pytest.approx(best, abs=1e-6)


def test_head_trains_only_the_head(tuned_tiny_bert, sentiment_files, tmp_path):
    # A frozen backbone learns only as well as its features: the tuned tiny BERT's carry the task.
    run = train_tiny(
        tuned_tiny_bert,
        sentiment_files,
        tmp_path / "runs",
        **{"strategy.name": "head", "train.learning_rate": 0.05, "train.epochs": 40},
    )
    params = run.metrics["parameters"]
    assert params["trainable"] == 32 * 2 + 2  # linear head over 32-wide pooled states
    trained = run.predictor.model.backbone.state_dict()
    original = AutoModelForSequenceClassification.from_pretrained(tuned_tiny_bert).bert.state_dict()
    for name, tensor in original.items():
        if name in trained:
            assert torch.equal(trained[name], tensor), f"backbone weight {name} changed"
    assert run.metrics["test"]["accuracy"] >= 0.85


def test_scratch_baseline_learns_from_random_init(sentiment_files, tmp_path, tiny_bert):
    run = train_tiny(
        tiny_bert,
        sentiment_files,
        tmp_path / "runs",
        **{"strategy.name": "scratch", "strategy.min_frequency": 1, "train.learning_rate": 5e-3},
    )
    assert run.metrics["test"]["accuracy"] >= 0.9
    assert run.metrics["backbone"] is None
    assert lmadapt.load(run.path).predict("what a superb and delightful story")[0]["label"] == "positive"


def test_multi_label_tunes_threshold_and_predicts_label_sets(tiny_bert, tmp_path):
    frame = sentiment_rows(360)
    frame["label"] = [
        "|".join(filter(None, ["praise" if label == "positive" else "", "music" if "music" in text else ""]))
        for text, label in zip(frame["text"], frame["label"])
    ]
    run = train_tiny(
        tiny_bert,
        write_three_splits(tmp_path, frame),
        tmp_path / "runs",
        **{"data.task": "multi_label", "train.epochs": 30, "train.learning_rate": 3e-3, "train.warmup_ratio": 0.1},
    )
    test = run.metrics["test"]
    assert test["micro_f1"] >= 0.85, test
    assert set(test["per_class"]) == {"music", "praise"}
    saved = json.loads((run.path / "labels.json").read_text())
    assert saved["task"] == "multi_label" and 0.05 <= saved["threshold"] <= 0.95
    predicted = lmadapt.load(run.path).predict(["the music was great and superb"])[0]
    assert "labels" in predicted and set(predicted["labels"]) <= {"music", "praise"}


def test_class_weighted_loss_weights_each_class():
    from lmadapt.training.losses import class_weighted_loss

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    weights = np.array([3.0, 1.0], dtype=np.float32)
    weighted = class_weighted_loss(weights, "single_label_classification")
    loss = weighted({"logits": logits}, labels)
    expected = torch.nn.functional.cross_entropy(logits, labels, weight=torch.tensor(weights))
    assert torch.isclose(loss, expected)
    assert not torch.isclose(loss, torch.nn.functional.cross_entropy(logits, labels))
    # Under gradient accumulation the Trainer passes the item count of all micro-batches: sum / count.
    summed = torch.nn.functional.cross_entropy(logits, labels, weight=torch.tensor(weights), reduction="sum")
    assert torch.isclose(weighted({"logits": logits}, labels, num_items_in_batch=6), summed / 6)


def test_lmadapt_models_scale_their_loss_by_the_trainers_item_count():
    # The Trainer passes num_items_in_batch to models that take **kwargs and then skips its own
    # division by the accumulation steps, so our models must divide by that count themselves.
    from lmadapt.models.lstm import LstmClassifierConfig, LstmForSequenceClassification

    torch.manual_seed(0)
    model = LstmForSequenceClassification(LstmClassifierConfig(vocab_size=20, num_labels=2)).eval()
    batch = {"input_ids": torch.tensor([[3, 4, 5], [6, 7, 0]]), "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]])}
    labels = torch.tensor([0, 1])
    mean = model(**batch, labels=labels).loss
    scaled = model(**batch, labels=labels, num_items_in_batch=8).loss
    assert torch.isclose(scaled, mean * 2 / 8)


class StopAfterEpoch(TrainerCallback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_save(self, args, state, control, **kwargs):
        if state.epoch >= self.epoch:
            raise KeyboardInterrupt("simulated interruption")


def test_resume_continues_an_interrupted_run_to_the_same_result(tiny_bert, sentiment_files, tmp_path):
    overrides = tiny_overrides(tiny_bert, sentiment_files, tmp_path / "runs", "whole", **{"train.epochs": 6})
    whole = lmadapt.train(lmadapt.load_config(None, overrides))

    overrides = tiny_overrides(tiny_bert, sentiment_files, tmp_path / "runs", "cut", **{"train.epochs": 6})
    config = lmadapt.load_config(None, overrides)
    from lmadapt.training.engine import train

    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[StopAfterEpoch(3)])
    assert not (tmp_path / "runs" / "cut").exists(), "an interrupted run must not look finished"
    with pytest.raises(LmadaptError, match="(?s)an interrupted run named 'cut'.*--resume"):
        lmadapt.train(config)
    with pytest.raises(
        LmadaptError, match=r"config differs from the interrupted run's: train.epochs \(was 6.0, now 5.0\)"
    ):
        lmadapt.train(lmadapt.load_config(None, [*overrides, "train.epochs=5"]), resume=True)
    resumed = lmadapt.train(config, resume=True)
    assert resumed.metrics["training"]["resumed_from"].startswith("checkpoint-")
    assert resumed.metrics["test"]["accuracy"] == whole.metrics["test"]["accuracy"]
    assert resumed.metrics["validation"]["macro_f1"] == pytest.approx(whole.metrics["validation"]["macro_f1"])
    a, b = whole.predictor.model.state_dict(), resumed.predictor.model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


class StopAtStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= 2:
            raise KeyboardInterrupt("interrupted before the first checkpoint")


def test_a_failed_or_early_interrupted_run_does_not_block_the_next(tiny_bert, sentiment_files, tmp_path):
    from lmadapt.training.engine import train

    overrides = tiny_overrides(tiny_bert, sentiment_files, tmp_path / "runs", "again", **{"train.epochs": 1})
    with pytest.raises(LmadaptError, match="not found"):
        lmadapt.train(lmadapt.load_config(None, [*overrides, "model.backbone=nobody/missing"]))
    with pytest.raises(KeyboardInterrupt):
        train(lmadapt.load_config(None, overrides), callbacks=[StopAtStep()])
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())
    assert lmadapt.train(lmadapt.load_config(None, overrides)).path.name == "again"


def test_head_and_scratch_runs_load_in_a_fresh_process(tiny_bert, sentiment_files, tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    for strategy in ("head", "scratch"):
        run = train_tiny(
            tiny_bert, sentiment_files, tmp_path / "runs", strategy, **{"strategy.name": strategy, "train.epochs": 1}
        )
        code = f"import lmadapt; print(lmadapt.load({str(run.path)!r}).predict(['a superb film'])[0]['label'])"
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env={**__import__("os").environ, "PYTHONPATH": str(REPO / "src")},
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() in ("positive", "negative")


def test_existing_run_and_missing_resume_are_clear_errors(tiny_bert, sentiment_files, tmp_path):
    train_tiny(tiny_bert, sentiment_files, tmp_path / "runs", **{"train.epochs": 1})
    with pytest.raises(LmadaptError, match="(?s)run folder already exists.*--overwrite"):
        train_tiny(tiny_bert, sentiment_files, tmp_path / "runs", **{"train.epochs": 1})
    with pytest.raises(LmadaptError, match="nothing to resume"):
        lmadapt.train(
            lmadapt.load_config(None, tiny_overrides(tiny_bert, sentiment_files, tmp_path / "runs", "other")),
            resume=True,
        )


def test_tampered_run_folder_is_refused(tiny_bert, sentiment_files, tmp_path):
    run = train_tiny(tiny_bert, sentiment_files, tmp_path / "runs", **{"train.epochs": 1})
    (run.path / "labels.json").write_text('{"task": "single_label", "id2label": {"0": "x", "1": "y"}}')
    with pytest.raises(LmadaptError, match="(?s)labels.json \\(hash mismatch\\).*restore"):
        load_run(run.path)
    with pytest.raises(LmadaptError, match="(?s)not a finished run folder"):
        load_run(tiny_bert)


def test_run_folder_write_is_atomic(tmp_path):
    final = tmp_path / "runs" / "r"
    write_run_folder(final, lambda f: (f / "a.txt").write_text("old"), overwrite=False)

    def broken(folder):
        (folder / "a.txt").write_text("new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_run_folder(final, broken, overwrite=True)
    assert (final / "a.txt").read_text() == "old"
    assert sorted(p.name for p in final.parent.iterdir()) == ["r"]


def test_predict_file_keeps_columns_and_evaluate_writes_metrics(tiny_bert, sentiment_files, tmp_path):
    from lmadapt.serving.batch import predict_file

    run = train_tiny(tiny_bert, sentiment_files, tmp_path / "runs")
    source = pd.read_csv(sentiment_files["test"]).assign(id=range(60))
    source.to_csv(tmp_path / "in.csv", index=False)
    assert predict_file(run, str(tmp_path / "in.csv"), tmp_path / "out.jsonl") == 60
    scored = pd.read_json(tmp_path / "out.jsonl", lines=True)
    assert list(scored.columns) == [
        "text",
        "label",
        "id",
        "predicted_label",
        "score_negative",
        "score_positive",
    ]
    assert (scored["predicted_label"] == scored["label"]).mean() >= 0.9
    assert np.allclose(scored["score_negative"] + scored["score_positive"], 1.0, atol=1e-5)

    metrics = lmadapt.evaluate(run.path, str(sentiment_files["test"]), output=tmp_path / "eval")
    assert metrics["accuracy"] == pytest.approx(run.metrics["test"]["accuracy"])
    assert (tmp_path / "eval" / "confusion.png").stat().st_size > 1000
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["examples"] == 60


def test_rows_removed_before_training_are_counted_and_reported(tiny_bert, tmp_path, monkeypatch, capsys, caplog):
    from tests.conftest import write_recipe
    from tests.unit.test_cli import run_cli

    frame = sentiment_rows(360)
    train, validation, test = frame[:240], frame[240:300], frame[300:]
    train = pd.concat([train, train[:7]])  # 7 repeated texts
    test = pd.concat([test, train[:5], test[:2]])  # 5 texts also in train, 2 repeated
    files = {}
    for name, part in (("train", train), ("validation", validation), ("test", test)):
        files[name] = tmp_path / f"{name}.csv"
        part.to_csv(files[name], index=False)
    recipe = write_recipe(tmp_path / "r.yaml", tiny_overrides(tiny_bert, files, tmp_path / "runs", "counted"))
    code, out, err = run_cli(monkeypatch, capsys, "train", recipe, "--set", "train.epochs=1")
    assert code == 0, err
    report = json.loads((tmp_path / "runs" / "counted" / "metrics.json").read_text())["data"]
    assert report["rows_read"] == {"train": 247, "validation": 60, "test": 67}
    assert report["duplicates_dropped"] == {"train": 7, "validation": 0, "test": 2}
    assert report["leaks_removed"] == {"test": 5}
    assert report["rows"] == {"train": 240, "validation": 60, "test": 60}
    # said when training starts (a warning) and again in the summary
    assert f"train ({files['train']}): 7 of 247 rows removed (7 duplicates); 240 left" in caplog.text
    flat = " ".join(out.split())
    assert f"test ({files['test']}): 7 of 67 rows removed (2 duplicates, 5 also in train); 60 left" in flat
    assert "test figures are on the 60 test rows left, not on the whole test file" in flat


def test_too_few_rows_left_after_cleaning_is_a_clear_error(tiny_bert, tmp_path):
    rows = sentiment_rows(4)
    repeated = pd.concat([rows] * 10)  # 40 rows, 4 different texts
    files = {"train": tmp_path / "train.csv"}
    repeated.to_csv(files["train"], index=False)
    overrides = [
        o
        for o in tiny_overrides(tiny_bert, {**files, "validation": "", "test": ""}, tmp_path / "runs")
        if not o.startswith(("data.validation", "data.test"))  # both split off train
    ]
    with pytest.raises(LmadaptError) as error:
        lmadapt.train(lmadapt.load_config(None, overrides))
    message = str(error.value)
    assert "training row(s) are left for 2 labels" in message
    assert "36 of 40 rows removed (36 duplicates); 4 left" in message
    assert "data.deduplicate=false" in message and str(files["train"]) in message
    assert not (tmp_path / "runs").exists()


def test_training_console_is_one_line_per_epoch_off_a_terminal(
    tiny_bert, sentiment_files, tmp_path, monkeypatch, capsys
):
    from tests.conftest import write_recipe
    from tests.unit.test_cli import run_cli

    recipe = write_recipe(tmp_path / "r.yaml", tiny_overrides(tiny_bert, sentiment_files, tmp_path / "runs", "quiet"))
    code, out, err = run_cli(monkeypatch, capsys, "train", recipe, "--set", "train.epochs=2")
    assert code == 0, err
    assert "\r" not in err and "{'loss'" not in err + out and "'train_runtime'" not in err + out
    lines = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2, err
    assert lines[0].startswith("epoch 1/2: training loss ") and ", validation accuracy " in lines[0]
    assert "macro-F1 " in lines[1] and lines[1].startswith("epoch 2/2")
    logged = (tmp_path / "runs" / "quiet" / "train_log.jsonl").read_text().splitlines()
    assert any('"loss"' in line for line in logged)  # the raw log dicts are kept there


def test_the_api_mirrors_the_cli(tiny_bert, sentiment_files, tmp_path):
    run = train_tiny(tiny_bert, sentiment_files, tmp_path / "runs", "mirror")
    texts = ["a superb and brilliant film", "dull and tedious"]
    assert [r["label"] for r in lmadapt.predict(run.path, texts, backend="torch")] == [
        r["label"] for r in run.predict(texts)
    ]
    written = lmadapt.predict_file(run.path, str(sentiment_files["test"]), tmp_path / "scored.csv", backend="torch")
    scored = pd.read_csv(tmp_path / "scored.csv")
    assert written == len(scored) == 60 and "predicted_label" in scored.columns
    report = lmadapt.inspect(str(sentiment_files["train"]), backbones=[str(tiny_bert)])
    assert report["rows"] == 240 and report["labels"] == {"positive": 120, "negative": 120}
    assert "minilm" in {m.alias for m in lmadapt.available_models()}
    assert {s.name for s in lmadapt.available_strategies()} >= {"full", "lora", "setfit"}
    with pytest.raises(LmadaptError, match="texts? 1 of 1 is empty"):
        lmadapt.predict(run.path, [""])


def test_embed_gives_a_runs_features_and_a_backbones_sentence_vectors(tiny_bert, sentiment_files, tmp_path):
    run = train_tiny(tiny_bert, sentiment_files, tmp_path / "runs", "embedded", **{"train.epochs": 1})
    texts = ["a superb and brilliant film", "dull and tedious", "the plot"]
    vectors = lmadapt.embed(run.path, texts)
    # a BERT classifier's features: the pooled [CLS] state its classification head reads
    model, tokenizer = run.load_model(), AutoTokenizer.from_pretrained(run.path / "model")
    with torch.inference_mode():
        for text, row in zip(texts, vectors):
            pooled = model.bert(**tokenizer(text, return_tensors="pt")).pooler_output[0].numpy()
            np.testing.assert_allclose(row, pooled, atol=1e-5)
        logits = model.classifier(torch.from_numpy(vectors)).numpy()
    np.testing.assert_allclose(logits, run.predictor.logits(texts), atol=1e-5)

    sentence = lmadapt.embed(str(tiny_bert), texts)  # a backbone: mean pooling of its last hidden states
    encoder = AutoModelForSequenceClassification.from_pretrained(tiny_bert).bert
    with torch.inference_mode():
        batch = tokenizer(texts[0], return_tensors="pt")
        states = encoder(**batch).last_hidden_state[0]
    assert sentence.shape == (3, 32)
    np.testing.assert_allclose(sentence[0], states.mean(dim=0).numpy(), atol=1e-5)

    with pytest.raises(LmadaptError, match="text 2 of 2 is empty"):
        lmadapt.embed(run, ["fine", " "])
