"""Out-of-scope detection on a tiny model: each score against a direct computation, the run folder's statistics,
abstention through every way a prediction leaves lmadapt, evaluation, and the settings that are refused."""

from __future__ import annotations

import json
import random

import httpx
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import logsumexp
from sklearn.covariance import LedoitWolf

import lmadapt
from lmadapt.config import DataConfig, OodConfig
from lmadapt.data.prepare import prepare_data
from lmadapt.errors import LmadaptError
from lmadapt.inference.ood import AMBIGUOUS, OUT_OF_SCOPE_CLASS, OodDetector
from lmadapt.runs import load_run, manifest_entry, update_manifest
from tests.conftest import FILLER, sentiment_rows, tiny_overrides, write_splits, write_three_splits

PNG = b"\x89PNG\r\n\x1a\n"
# Out-of-scope texts: single letters the tiny vocabulary knows, never a sentiment word.
LETTERS = list("abcdefghijklmnopqrstuvwxyz")


def out_of_scope_rows(n: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    texts = [" ".join(rng.sample(LETTERS, rng.randint(3, 6))) for _ in range(n)]
    return pd.DataFrame({"text": [f"{t} {i}" for i, t in enumerate(texts)], "label": "oos"})


def intent_files(folder, oos_in_train: int = 0) -> dict:
    """The synthetic sentiment rows with out-of-scope rows (label oos) in validation and test (and train)."""
    frame = sentiment_rows(360)
    oos = out_of_scope_rows(80 + oos_in_train, seed=3)
    parts = {
        "train": pd.concat([frame[:240], oos[80:]]),
        "validation": pd.concat([frame[240:300], oos[:40]]),
        "test": pd.concat([frame[300:], oos[40:80]]),
    }
    return write_splits(folder, parts)


@pytest.fixture(scope="module")
def ood_run(tuned_tiny_bert, tmp_path_factory):
    """A tiny BERT fine-tuned with out-of-scope detection (knn applied, every method calibrated)."""
    work = tmp_path_factory.mktemp("ood")
    files = intent_files(work)
    overrides = tiny_overrides(
        tuned_tiny_bert, files, work / "runs", "intents", **{"train.epochs": 3, "ood.method": "knn", "ood.label": "oos"}
    )
    return lmadapt.train(lmadapt.load_config(None, overrides)), files


def direct_outputs(model, tokenizer, texts):
    """Logits and the pooled [CLS] features (the head's input) of each text alone, without the predictor."""
    logits, features = [], []
    with torch.no_grad():
        for text in texts:
            encoded = tokenizer(text, return_tensors="pt", truncation=True, max_length=32)
            features.append(model.bert(**encoded).pooler_output[0].numpy())
            logits.append(model(**encoded).logits[0].numpy())
    return np.array(logits, dtype=np.float64), np.array(features, dtype=np.float64)


def test_each_score_is_what_its_definition_computes(ood_run):
    run, files = ood_run
    run = load_run(run.path)
    detector, model, tokenizer = run.predictor.ood, run.predictor.model, run.load_tokenizer()
    data = prepare_data(run.run_config.data, run.run_config.seed, ood=run.run_config.ood)
    texts = list(pd.read_csv(files["test"])["text"][::10])
    logits, features = direct_outputs(model, tokenizer, texts)
    train_logits, train_features = direct_outputs(model, tokenizer, data.train.texts)

    # the statistics: class means and the precision of the shared (Ledoit-Wolf) covariance of the training rows
    ids = np.array([run.labels.label2id[label] for label in data.train.labels])
    means = np.stack([train_features[ids == c].mean(axis=0) for c in range(len(run.labels))])
    precision = np.linalg.inv(LedoitWolf(assume_centered=True).fit(train_features - means[ids]).covariance_)
    np.testing.assert_allclose(detector.statistics.class_means, means, atol=1e-4)
    np.testing.assert_allclose(detector.statistics.precision, precision, rtol=2e-3, atol=1e-2)

    read_logits, read_features = run.predictor.logits_and_features(texts)
    np.testing.assert_allclose(read_logits, logits, atol=1e-4)
    probabilities = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
    bank = train_features / np.linalg.norm(train_features, axis=1, keepdims=True)
    for i in range(len(texts)):
        expected = {
            "msp": 1 - probabilities[i].max(),
            "energy": -np.log(np.exp(logits[i]).sum()),
            "mahalanobis": min((features[i] - m) @ precision @ (features[i] - m) for m in means),
            "knn": sorted(np.linalg.norm(bank - features[i] / np.linalg.norm(features[i]), axis=1))[9],
        }
        for method, value in expected.items():
            got = detector.scores(read_logits[i : i + 1], read_features[i : i + 1], method)[0]
            assert got == pytest.approx(value, rel=2e-3, abs=2e-3), method


def test_the_run_folder_keeps_the_detector_and_reloads_it_bit_exact(ood_run):
    run, _ = ood_run
    manifest = (run.path / "manifest.json").read_text()
    assert '"ood.json"' in manifest and '"ood_statistics.safetensors"' in manifest
    first, second = load_run(run.path).predictor.ood, load_run(run.path).predictor.ood
    assert first.method == second.method == "knn" and first.thresholds == second.thresholds
    for name in ("class_means", "precision", "bank"):
        a, b = getattr(first.statistics, name), getattr(second.statistics, name)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert set(first.thresholds) == {"msp", "energy", "mahalanobis", "knn"}
    assert first.out_of_scope_labels == ["oos"] and first.abstain_label == "unknown"

    ood = run.metrics["ood"]
    assert set(ood["validation"]) == set(first.thresholds)
    for figures in ood["validation"].values():
        assert {"threshold", "in_scope_accuracy", "oos_recall", "auroc", "fpr95", "aupr"} <= set(figures)
    test = ood["test"]
    assert test["method"] == "knn" and test["oos_rows"] == 40 and test["in_scope_rows"] == 60
    assert test["threshold"] == first.threshold and set(test["methods"]) == set(first.thresholds)
    assert run.metrics["data"]["ood"] == {"labels": ["oos"], "train_removed": 0, "validation": 40, "test": 40}
    assert run.metrics["test"]["examples"] == 60  # the classification figures are the in-scope rows'
    for plot in ("ood_scores.png", "ood_tradeoff.png"):
        assert (run.path / plot).read_bytes()[:8] == PNG


def test_a_changed_statistics_file_is_caught_on_load(ood_run, tmp_path):
    import shutil

    run, _ = ood_run
    copy = tmp_path / "copy"
    shutil.copytree(run.path, copy)
    with (copy / "ood_statistics.safetensors").open("r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x00\x80\x7f")
    with pytest.raises(LmadaptError, match="ood_statistics.safetensors"):
        load_run(copy)


def validation_texts(files) -> list[str]:
    return list(pd.read_csv(files["validation"])["text"])


def check_abstentions(results, detector) -> None:
    """Each result abstains exactly where its score is over the threshold, answering the abstain label."""
    for result in results:
        over = result["ood_score"] > detector.threshold
        assert result["abstained"] == over and (result["label"] == "unknown") == over
        assert (result.get("reason") == "out_of_scope") == over
        if not over:
            assert result["label"] == max(result["scores"], key=result["scores"].get)


def test_abstention_through_run_predict_and_the_api(ood_run):
    run, files = ood_run
    texts = validation_texts(files)
    results = run.predict(texts)
    detector = run.predictor.ood
    check_abstentions(results, detector)
    abstained = [r["abstained"] for r in results]
    assert 0 < sum(abstained[60:]) and sum(abstained[:60]) < 60  # out-of-scope rows abstain, in-scope ones are answered
    assert lmadapt.predict(run.path, texts, backend="torch") == results

    raw = lmadapt.predict(run.path, texts, backend="torch", abstain=False)
    assert [r["label"] for r in raw] == [max(r["scores"], key=r["scores"].get) for r in results]
    assert not any(r["abstained"] for r in raw) and [r["ood_score"] for r in raw] == [r["ood_score"] for r in results]


def test_abstention_through_the_cli_and_a_scored_file(ood_run, monkeypatch, capsys, tmp_path):
    from tests.unit.test_cli import run_cli

    run, files = ood_run
    texts = validation_texts(files)
    expected = run.predict(texts)
    out_text, in_text = next(t for t, r in zip(texts, expected) if r["abstained"]), texts[0]
    code, out, err = run_cli(monkeypatch, capsys, "predict", run.path, out_text, in_text)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split()[0] == "unknown" and "(abstained, out_of_scope; best label" in lines[0]
    assert lines[1].split()[0] == expected[0]["label"]
    code, out, err = run_cli(monkeypatch, capsys, "predict", run.path, out_text, "--no-abstain")
    assert code == 0, err
    best = run.predict([out_text])[0]["scores"]
    assert out.split()[0] == max(best, key=best.get)

    scored = tmp_path / "scored.csv"
    code, out, err = run_cli(
        monkeypatch, capsys, "predict", run.path, "--input", files["validation"], "--output", scored
    )
    assert code == 0, err
    frame = pd.read_csv(scored)
    assert list(frame["abstained"]) == [r["abstained"] for r in expected]
    assert list(frame["predicted_label"]) == [r["label"] for r in expected]
    np.testing.assert_allclose(frame["ood_score"], [r["ood_score"] for r in expected], atol=1e-5)


def test_abstention_through_the_service(ood_run):
    from tests.unit.test_serving import live_server

    run, files = ood_run
    texts = validation_texts(files)[50:70]
    expected = run.predict(texts)
    with live_server([run], backend="torch") as base:
        answered = httpx.post(f"{base}/v1/predict", json={"texts": texts}).json()["predictions"]
        raw = httpx.post(f"{base}/v1/predict", json={"texts": texts, "abstain": False}).json()["predictions"]
        models = httpx.get(f"{base}/v1/models").json()
        metrics = httpx.get(f"{base}/metrics").text
    assert [p["label"] for p in answered] == [r["label"] for r in expected]
    assert [p["abstained"] for p in answered] == [r["abstained"] for r in expected]
    assert all(p.get("reason") == "out_of_scope" for p in answered if p["abstained"])
    np.testing.assert_allclose([p["ood_score"] for p in answered], [r["ood_score"] for r in expected], atol=1e-5)
    assert [p["label"] for p in raw] == [max(r["scores"], key=r["scores"].get) for r in expected]
    assert not any(p["abstained"] for p in raw)
    assert models[0]["ood_method"] == "knn" and models[0]["abstain_label"] == "unknown"
    abstentions = sum(r["abstained"] for r in expected)
    assert f'lmadapt_abstentions_total{{model="{run.name}",reason="out_of_scope"}} {abstentions:.1f}' in metrics


def test_evaluate_measures_abstention_on_rows_labelled_out_of_scope(ood_run, tmp_path, monkeypatch, capsys):
    from tests.unit.test_cli import run_cli

    run, files = ood_run
    report = lmadapt.evaluate(run.path, str(files["test"]), output=tmp_path / "evaluation")
    ood = report["ood"]
    trained = run.metrics["ood"]["test"]  # the same rows as training's test report
    for method, figures in ood.pop("methods").items():
        assert figures == pytest.approx(trained["methods"][method])
    assert ood == pytest.approx({k: v for k, v in trained.items() if k != "methods"})
    assert report["examples"] == 60 and ood["oos_rows"] == 40
    assert 0.0 <= ood["fpr95"] <= 1.0 and 0.5 < ood["auroc"] <= 1.0
    for plot in ("ood_scores.png", "ood_tradeoff.png"):
        assert (tmp_path / "evaluation" / plot).read_bytes()[:8] == PNG

    code, out, err = run_cli(
        monkeypatch, capsys, "evaluate", run.path, "--data", files["test"], "--output", tmp_path / "e2"
    )
    assert code == 0, err
    lines = out.splitlines()
    assert "out-of-scope detection" in out and "* applied" in out and "60 in-scope and 40 out-of-scope rows" in out
    (knn,) = [line for line in lines if "knn" in line]
    assert "knn *" in knn and f"{100 * ood['oos_recall']:.2f}" in knn


def detector(**options) -> OodDetector:
    settings = {"method": "msp", "thresholds": {"msp": 0.9}, "abstain_label": "unknown", "in_scope": [0, 1, 2]}
    settings.update(options)
    return OodDetector(**settings)


def test_a_trained_out_of_scope_class_and_an_ambiguous_top_two_abstain_whatever_the_score():
    logits = np.array([[3.0, 0.0, 0.0], [2.0, 2.0, -5.0], [0.0, 0.0, 6.0], [0.0, 5.0, 0.0]])
    plain = detector()
    assert plain.forced(logits) == [None] * 4
    scores, reasons = detector(ood_class=2, ambiguity_gap=0.1, in_scope=[0, 1]).decide(logits, None)
    assert reasons == [None, AMBIGUOUS, OUT_OF_SCOPE_CLASS, None]
    # msp reads the in-scope labels only: row 3 is certain of label 1 among labels 0 and 1
    np.testing.assert_allclose(scores[[0, 3]], [1 - 1 / (1 + np.exp(-3.0)), 1 - 1 / (1 + np.exp(-5.0))])


def test_training_the_out_of_scope_label_as_a_class_abstains_when_it_is_predicted(tuned_tiny_bert, tmp_path):
    files = intent_files(tmp_path, oos_in_train=60)
    overrides = tiny_overrides(
        tuned_tiny_bert,
        files,
        tmp_path / "runs",
        "with-oos-class",
        **{"ood.method": "msp", "ood.label": "oos", "ood.train_as_class": True},
    )
    run = lmadapt.train(lmadapt.load_config(None, overrides))
    assert "oos" in run.labels.labels and run.metrics["data"]["ood"]["train_removed"] == 0
    results = run.predict(validation_texts(files))
    predicted_class = [r for r in results if max(r["scores"], key=r["scores"].get) == "oos"]
    assert predicted_class and all(r["abstained"] and r["label"] == "unknown" for r in predicted_class)
    assert all(
        r["reason"] == OUT_OF_SCOPE_CLASS for r in predicted_class if r["ood_score"] <= run.predictor.ood.threshold
    )


def three_label_files(folder) -> dict:
    frame = sentiment_rows(360)
    rng = random.Random(5)
    neutral = pd.DataFrame(
        {"text": [" ".join(rng.sample(FILLER, 4)) + f" n{i}" for i in range(120)], "label": "neutral"}
    )
    parts = {
        "train": pd.concat([frame[:240], neutral[:80]]),
        "validation": pd.concat([frame[240:300], neutral[80:100]]),
    }
    parts["test"] = pd.concat([frame[300:], neutral[100:]])
    return write_splits(folder, parts)


def test_holding_labels_out_makes_their_rows_out_of_scope(tmp_path):
    files = three_label_files(tmp_path)
    config = DataConfig(train=str(files["train"]), validation=str(files["validation"]), test=str(files["test"]))
    data = prepare_data(config, seed=0, ood=OodConfig(method="msp", holdout_share=0.34))
    (held,) = data.out_of_scope
    assert held not in data.train.labels and held not in data.labels.labels and len(data.labels) == 2
    for name in ("validation", "test"):
        assert held not in getattr(data, name).labels
        assert set(data.out_of_scope_rows[name].labels) == {held}
        assert data.with_out_of_scope(name).labels[-1] == held
    assert data.report["ood"]["train_removed"] == {"neutral": 80, "positive": 120, "negative": 120}[held]
    again = prepare_data(config, seed=0, ood=OodConfig(method="msp", holdout_share=0.34))
    assert again.out_of_scope == data.out_of_scope  # seeded


@pytest.mark.parametrize(
    ("settings", "message", "fix"),
    [
        (
            {"ood.label": "oss"},
            "ood.label 'oss' is the label of no row of train, validation, test",
            "did you mean 'oos'",
        ),
        ({"ood.target_in_scope_recall": 1.5}, "ood.target_in_scope_recall must lie in (0, 1), got 1.5", "e.g. 0.95"),
        ({"ood.max_in_scope_loss": -0.1}, "ood.max_in_scope_loss must lie in [0, 1), got -0.1", "two points"),
        ({"ood.method": "energie"}, "'energie' is not a valid value for ood.method", "did you mean 'energy'"),
        ({"ood.train_as_class": True, "ood.label": None}, "ood.label is empty", "name the data's out-of-scope label"),
        ({"ood.holdout_share": 0.9, "ood.label": None}, "leaving fewer than two", "lower it"),
        (
            {"ood.label": None, "ood.method": "auto", "in_scope_data": True},
            "the validation data has none",
            "holdout_share",
        ),
        ({"data.task": "multi_label"}, "for single-label classifiers", "ood.method=none"),
    ],
)
def test_bad_ood_settings_are_refused_before_training(settings, message, fix, tuned_tiny_bert, tmp_path):
    options = {"ood.method": "knn", "ood.label": "oos", **settings}
    in_scope_only = options.pop("in_scope_data", False)
    files = write_three_splits(tmp_path, sentiment_rows(360)) if in_scope_only else intent_files(tmp_path)
    overrides = tiny_overrides(tuned_tiny_bert, files, tmp_path / "runs", "bad", **options)
    with pytest.raises(LmadaptError) as caught:
        lmadapt.train(lmadapt.load_config(None, overrides))
    assert message in caught.value.what and fix in (caught.value.fix or "")
    assert not (tmp_path / "runs" / "bad").exists()


def test_a_feature_score_on_a_model_without_a_head_is_refused_before_training(tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    from lmadapt.training.ood import ood_methods

    language_model = AutoModelForCausalLM.from_pretrained(tiny_llama)  # label-word scoring: no classification head
    files = intent_files(tmp_path)
    config = DataConfig(train=str(files["train"]), validation=str(files["validation"]), test=str(files["test"]))
    data = prepare_data(config, seed=0, ood=OodConfig(method="knn", label="oos"))
    with pytest.raises(LmadaptError, match="reads the classifier's features") as caught:
        ood_methods(lmadapt.load_config(None, ["ood.method=knn", "ood.label=oos"]), language_model, data)
    assert "msp, energy or auto" in caught.value.fix
    auto = lmadapt.load_config(None, ["ood.method=auto", "ood.label=oos"])
    assert ood_methods(auto, language_model, data) == ("msp", "energy")


def test_an_update_refits_the_runs_detector_and_still_abstains_out_of_scope(ood_run, tmp_path):
    run, files = ood_run
    lmadapt.update(run, str(files["train"]), name="updated", progress=lambda _: None)
    updated = lmadapt.load(run.path.parent / "updated")
    before, after = load_run(run.path).predictor.ood, updated.predictor.ood
    # the same method and out-of-scope labels, its statistics read from the updated model (replay memory + new rows)
    assert after.method == before.method == "knn" and after.out_of_scope_labels == before.out_of_scope_labels == ["oos"]
    assert after.statistics.bank.shape[1] == before.statistics.bank.shape[1]
    assert not np.array_equal(after.statistics.bank, before.statistics.bank)
    assert updated.metrics["ood"]["validation"]["knn"]["threshold"] == after.threshold
    test = pd.read_csv(files["test"])
    abstained = np.array([r["abstained"] for r in updated.predict(list(test["text"]))])
    out_of_scope = (test["label"] == "oos").to_numpy()
    assert abstained[out_of_scope].mean() >= 0.5 and abstained[~out_of_scope].mean() <= 0.2


def test_a_stream_of_experiences_refuses_out_of_scope_detection(tmp_path):
    config = lmadapt.load_config(
        None, ["ood.method=knn", "ood.label=oos", "continual.methods=[replay]", "continual.class_groups=2"]
    )
    with pytest.raises(LmadaptError, match=r"a stream of experiences does not fit out-of-scope detection") as caught:
        lmadapt.learn_continually(config)
    assert "`lmadapt update` refits" in caught.value.fix


def test_an_exported_run_abstains_by_its_feature_and_logit_scores_as_pytorch_does(ood_run, tmp_path, monkeypatch):
    import shutil

    run, files = ood_run
    texts = validation_texts(files)
    # A graph written without the features output (as an older lmadapt wrote them): auto keeps PyTorch for knn,
    # an explicit onnx is refused with the way out
    old = tmp_path / "old-export"
    shutil.copytree(run.path, old)
    with monkeypatch.context() as patched:
        patched.setattr("lmadapt.serving.export.feature_head", lambda *args: None)
        lmadapt.export(old)
    assert json.loads((old / "onnx" / "export.json").read_text())["onnx"]["outputs"] == ["logits"]
    assert lmadapt.load(old).inference("auto").engine.name == "torch"
    with pytest.raises(LmadaptError, match=r"out-of-scope score \(knn\) reads the classifier's features") as caught:
        lmadapt.load(old).inference("onnx")
    assert "export the run again" in caught.value.fix
    # Exported now, the graph gives the features too: knn abstains on it as in PyTorch
    copy = tmp_path / "exported"
    shutil.copytree(run.path, copy)
    report = lmadapt.export(copy)["onnx"]
    assert report["outputs"] == ["logits", "features"] and report["min_feature_cosine"] > 0.9999
    loaded = lmadapt.load(copy)
    assert_abstains_as_pytorch(loaded.inference("auto"), loaded.predictor, texts)
    # msp reads the logits: the same run applying msp (its threshold was calibrated too) abstains on the exported
    # graph as it does in PyTorch
    settings = json.loads((copy / "ood.json").read_text())
    (copy / "ood.json").write_text(json.dumps({**settings, "method": "msp"}))
    update_manifest(copy, {"ood.json": manifest_entry(copy / "ood.json")})
    loaded = lmadapt.load(copy)
    assert_abstains_as_pytorch(loaded.inference("onnx"), loaded.predictor, texts)


def assert_abstains_as_pytorch(onnx, torch_predictor, texts: list[str]) -> None:
    """The exported graph's out-of-scope scores are PyTorch's to rounding, and so are its abstentions, but for a
    text at its threshold (the threshold is one of these validation texts' scores)."""
    exported, reference = onnx.predict(texts), torch_predictor.predict(texts)
    assert onnx.engine.name == "onnx" and any(r["abstained"] for r in exported)
    scores = np.array([r["ood_score"] for r in reference])
    np.testing.assert_allclose([r["ood_score"] for r in exported], scores, atol=1e-4)
    clear = np.abs(scores - torch_predictor.ood.threshold) > 1e-4
    assert clear.mean() > 0.9
    assert [r["abstained"] for r, c in zip(exported, clear) if c] == [
        r["abstained"] for r, c in zip(reference, clear) if c
    ]
