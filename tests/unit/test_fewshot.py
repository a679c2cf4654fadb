"""The k-shot sampler, and few-shot runs through the config."""

from __future__ import annotations

from collections import Counter

import pytest

import lmadapt
from lmadapt.data.kshot import k_shot
from lmadapt.data.split import Split
from lmadapt.errors import LmadaptError

POOL = Split(
    texts=[f"text {i}" for i in range(100)],
    labels=["a"] * 50 + ["b"] * 45 + ["c"] * 5,
    rows=list(range(100)),
)


def test_k_shot_is_stratified_seed_stable_and_nested():
    eight, counts = k_shot(POOL, 8, seed=3, task="single_label")
    assert counts == {"a": 8, "b": 8, "c": 5}  # a class with fewer rows gives all it has
    assert Counter(eight.labels) == counts
    again, _ = k_shot(POOL, 8, seed=3, task="single_label")
    assert again.texts == eight.texts
    sixteen, _ = k_shot(POOL, 16, seed=3, task="single_label")
    assert set(eight.texts) < set(sixteen.texts)
    other, _ = k_shot(POOL, 8, seed=4, task="single_label")
    assert set(other.texts) != set(eight.texts)
    assert eight.labels[:3] != ["a", "a", "a"] or eight.labels[3:6] != ["a", "a", "a"]  # classes interleaved
    for i, text in enumerate(eight.texts):
        assert POOL.labels[int(text.split()[1])] == eight.labels[i]  # rows keep their labels


def test_k_shot_refuses_multi_label_and_bad_k(sentiment_files):
    with pytest.raises(LmadaptError, match="needs one label per text"):
        k_shot(POOL, 4, seed=0, task="multi_label")
    with pytest.raises(LmadaptError, match="data.shots_per_class must be positive"):
        lmadapt.load_config(None, ["data.shots_per_class=0"])


def test_shots_per_class_trims_the_training_split_only(sentiment_files):
    from lmadapt.data.prepare import prepare_data

    config = lmadapt.load_config(
        None,
        [
            f"data.train={sentiment_files['train']}",
            f"data.validation={sentiment_files['validation']}",
            f"data.test={sentiment_files['test']}",
            "data.shots_per_class=4",
        ],
    )
    data = prepare_data(config.data, seed=1)
    assert Counter(data.train.labels) == {"negative": 4, "positive": 4}
    assert data.report["shots_per_class"] == {"negative": 4, "positive": 4}
    assert len(data.validation) == 60 and len(data.test) == 60


def test_setfit_trains_on_k_shots_and_reloads_to_the_same_logits(
    tuned_tiny_bert, sentiment_files, tmp_path, monkeypatch
):
    import numpy as np

    from lmadapt.inference.predictor import Predictor
    from lmadapt.strategies.setfit import EncoderWithHead
    from tests.conftest import tiny_overrides

    trained_models = []
    set_head = EncoderWithHead.set_head

    def keep(model, coef, intercept):
        trained_models.append(model)
        set_head(model, coef, intercept)

    monkeypatch.setattr(EncoderWithHead, "set_head", keep)

    settings = tiny_overrides(tuned_tiny_bert, sentiment_files, tmp_path / "runs", "setfit")
    settings += ["strategy.name=setfit", "data.shots_per_class=8", "train.epochs=1", "train.learning_rate=1e-3"]
    run = lmadapt.train(lmadapt.load_config(None, settings))
    assert run.metrics["data"]["rows"]["train"] == 16 and run.metrics["training"]["examples"] == 16
    assert run.metrics["test"]["accuracy"] >= 0.8, run.metrics["test"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["setfit"]  # no scratch folder left beside it
    texts = ["the film was great", "a dull and boring plot", "quite superb"]
    trained = Predictor(trained_models[0], run.load_tokenizer(), run.labels, run.max_length).logits(texts)
    np.testing.assert_allclose(lmadapt.load(run.path).predictor.logits(texts), trained, rtol=0, atol=1e-5)


def incontext_settings(tiny_llama, files, out, name, *extra):
    from tests.conftest import tiny_overrides

    settings = tiny_overrides(tiny_llama, files, out, name) + ["strategy.name=incontext", "data.shots_per_class=2"]
    settings += ["strategy.template='{text} ? {label}'", "strategy.verbalizer={negative: [awful], positive: [great]}"]
    return settings + list(extra)


def test_incontext_random_demonstrations_are_one_balanced_cached_prefix(tiny_llama, sentiment_files, tmp_path):
    import json

    import numpy as np
    from transformers import AutoTokenizer

    run = lmadapt.train(lmadapt.load_config(None, incontext_settings(tiny_llama, sentiment_files, tmp_path, "icl")))
    pool = json.loads((run.path / "model" / "demonstrations.json").read_text())
    assert Counter(e["label"] for e in pool) == {"negative": 2, "positive": 2}
    model = run.load_model()
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    prefix = tokenizer.decode(model.prefix_ids, skip_special_tokens=True)
    assert prefix.count("?") == 4 and prefix.count("awful") >= 2 and prefix.count("great") >= 2
    reader = run.load_tokenizer()
    assert reader.prompts(["so dull"], None, None) == ["so dull ?"]  # the shared part lives in the model
    texts = ["the film was great", "dull and tedious"]
    np.testing.assert_allclose(lmadapt.load(run.path).predictor.logits(texts), run.predictor.logits(texts), atol=1e-6)
    # In bfloat16 (the fast path on CPUs with AMX) the cached prefix is read again in that dtype.
    half = np.asarray(run.inference("torch-bf16").scores(texts))
    np.testing.assert_allclose(half, np.asarray(run.inference("torch").scores(texts)), atol=0.05)


def test_incontext_similar_puts_the_closest_examples_last(
    tiny_llama, tiny_bert, sentiment_files, tmp_path, monkeypatch
):
    import json

    from lmadapt.strategies import incontext

    settings = incontext_settings(
        tiny_llama, sentiment_files, tmp_path, "similar", "strategy.selection=similar", f"strategy.encoder={tiny_bert}"
    )
    settings += ["strategy.demonstrations=3"]
    run = lmadapt.train(lmadapt.load_config(None, settings))
    pool = json.loads((run.path / "model" / "demonstrations.json").read_text())
    reader = run.load_tokenizer()
    prompt = reader.prompts([pool[1]["text"]], None, None)[0]
    demonstrations = prompt.split("\n\n")
    assert len(demonstrations) == 4 and demonstrations[-1] == pool[1]["text"] + " ?"
    assert demonstrations[-2].startswith(pool[1]["text"] + " ?")  # the very same text is the closest
    assert len(run.load_model().prefix_ids) == 0
    built = []
    selector = incontext.SimilarDemonstrations
    monkeypatch.setattr(incontext, "SimilarDemonstrations", lambda *a: built.append(a) or selector(*a))
    loaded = lmadapt.load(run.path)
    assert loaded.predict([pool[0]["text"]])[0]["label"] in {"negative", "positive"}
    assert len(built) == 1  # the predictor reads through the selector the rebuilt model came with


def test_incontext_refuses_more_demonstrations_than_the_context_holds(tiny_llama, sentiment_files, tmp_path):
    settings = incontext_settings(tiny_llama, sentiment_files, tmp_path, "long") + ["data.shots_per_class=40"]
    with pytest.raises(LmadaptError, match="more than the model's context of 128"):
        lmadapt.train(lmadapt.load_config(None, settings))
    assert not (tmp_path / "long").exists()


def test_prompt_finetune_trains_only_lora_through_the_label_words(tiny_llama, sentiment_files, tmp_path, monkeypatch):
    import numpy as np
    import torch

    from lmadapt.inference.predictor import Predictor
    from lmadapt.models.label_scoring import VerbalizedLM
    from tests.conftest import tiny_overrides

    settings = tiny_overrides(tiny_llama, sentiment_files, tmp_path, "pet") + ["strategy.name=prompt_finetune"]
    settings += ["strategy.template='{text} ! {label}'", "strategy.verbalizer={negative: [awful], positive: [great]}"]
    settings += ["data.shots_per_class=16", "train.epochs=15", "train.learning_rate=1e-2", "train.batch_size=8"]
    settings += ["train.select_best=false", "train.early_stopping_patience="]
    zero = lmadapt.train(lmadapt.load_config(None, [*settings, "name=zero", "strategy.name=zeroshot_lm"]))
    run = lmadapt.train(lmadapt.load_config(None, settings))
    assert 0 < run.metrics["parameters"]["trainable_pct"] < 50
    assert run.metrics["training"]["epochs"] == 15 and run.metrics["data"]["rows"]["train"] == 32
    assert run.metrics["test"]["accuracy"] >= zero.metrics["test"]["accuracy"] + 0.2, (run.metrics, zero.metrics)
    saved = (run.path / "model" / "delta.safetensors").stat().st_size
    assert saved < 0.5 * (tiny_llama / "model.safetensors").stat().st_size  # LoRA matrices, not the LM
    model = run.load_model()
    assert isinstance(model, VerbalizedLM)
    texts = ["the film was great", "a dull and boring plot"]
    again = lmadapt.load(run.path)
    np.testing.assert_allclose(
        again.predictor.logits(texts), Predictor(model, run.load_tokenizer(), run.labels, 32).logits(texts), atol=1e-6
    )
    assert all(not p.requires_grad for p in model.parameters()) and torch.is_tensor(model.words)


def test_prompt_finetune_keeps_the_best_epoch_by_default(tiny_llama, sentiment_files, tmp_path):
    """On an LM with tied input and output embeddings (as SmolLM2): the restored best checkpoint stores the
    tied matrix once."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from tests.conftest import save_random_model, tiny_overrides

    config = AutoConfig.from_pretrained(tiny_llama, tie_word_embeddings=True)
    tied = save_random_model(
        AutoModelForCausalLM.from_config, config, AutoTokenizer.from_pretrained(tiny_llama), tmp_path / "tied"
    )
    settings = tiny_overrides(tied, sentiment_files, tmp_path, "pet-best") + ["strategy.name=prompt_finetune"]
    settings += ["strategy.template='{text} ! {label}'", "strategy.verbalizer={negative: [awful], positive: [great]}"]
    settings += ["data.shots_per_class=8", "train.epochs=3", "train.batch_size=8"]
    run = lmadapt.train(lmadapt.load_config(None, settings))  # select_best and early stopping: the defaults
    assert run.metrics["training"]["epochs"] <= 3 and 0 <= run.metrics["test"]["accuracy"] <= 1


def test_select_best_false_conflicts_with_early_stopping():
    with pytest.raises(LmadaptError, match="early stopping picks an epoch on validation"):
        lmadapt.load_config(None, ["train.select_best=false"])


def test_fewshot_sweep_writes_table_plot_and_resumes(tiny_llama, sentiment_files, tmp_path, monkeypatch):
    import json

    from lmadapt.compare.fewshot import fewshot_sweep
    from tests.conftest import tiny_overrides

    settings = tiny_overrides(tiny_llama, sentiment_files, tmp_path, "base") + ["strategy.name=incontext"]
    settings += ["strategy.template='{text} ! {label}'", "strategy.verbalizer={negative: [awful], positive: [great]}"]
    settings += ["train.epochs=1"]
    base = lmadapt.load_config(None, settings)
    output = tmp_path / "sweep"
    result = fewshot_sweep(
        base, output, shots=[1, 2], seeds=2, zero_shot=["zeroshot_lm"], full=True, progress=lambda _: None
    )
    assert len(result.rows) == 2 * 2 + 2 and not any("error" in r for r in result.rows)
    by_key = {(s["strategy"], s["shots"]): s for s in result.summary}
    assert by_key[("incontext", 2)]["seeds"] == 2 and by_key[("zeroshot_lm", 0)]["seeds"] == 1
    pair = [r["accuracy"] for r in result.rows if r["strategy"] == "incontext" and r["shots"] == 2]
    assert by_key[("incontext", 2)]["accuracy"] == pytest.approx(sum(pair) / 2)
    assert ("full", None) in by_key
    for name in ("fewshot.md", "fewshot.csv", "fewshot.json", "fewshot.png"):
        assert (output / name).stat().st_size > 0
    assert json.loads((output / "fewshot.json").read_text())["summary"][0]["strategy"] == "incontext"
    assert "| incontext | 2 | 2 |" in (output / "fewshot.md").read_text()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(lmadapt, "train", no_training)
    again = fewshot_sweep(
        base, output, shots=[1, 2], seeds=2, zero_shot=["zeroshot_lm"], full=True, progress=lambda _: None
    )
    assert again.summary == result.summary


@pytest.mark.parametrize("case", ["missing", "ragged", "no label"])
def test_bad_data_stops_a_sweep_before_it_starts_and_keeps_the_earlier_one(case, tmp_path, monkeypatch, capsys):
    from tests.conftest import write_recipe
    from tests.unit.test_cli import run_cli
    from tests.unit.test_compare import bad_data, snapshot

    data, expected = bad_data(tmp_path)[case]
    recipe = write_recipe(tmp_path / "recipe.yaml", [f"data.train={data}", "strategy.name=setfit"])
    output = tmp_path / "sweep"
    for name in ("fewshot.md", "fewshot.csv", "fewshot.json", "fewshot.png", "runs/setfit-k4-s0/manifest.json"):
        (output / name).parent.mkdir(parents=True, exist_ok=True)
        (output / name).write_text(f"earlier {name}")
    before = snapshot(output)

    code, _, err = run_cli(monkeypatch, capsys, "fewshot", recipe, "--output", output, "--zero-shot", "zeroshot_embed")
    assert code == 2 and "Traceback" not in err
    for text in expected:
        assert text in err, err
    assert snapshot(output) == before
    code, _, err = run_cli(monkeypatch, capsys, "fewshot", recipe, "--output", tmp_path / "fresh")
    assert code == 2 and expected[0] in err and not (tmp_path / "fresh").exists()


def test_a_runs_data_error_row_names_the_file_and_line(tmp_path):
    from lmadapt.compare.fewshot import _run
    from tests.unit.test_compare import bad_data

    data, expected = bad_data(tmp_path)["ragged"]
    config = lmadapt.load_config(None, [f"data.train={data}", f"output_dir={tmp_path}"])
    row = _run(config, "test", progress=lambda _: None)
    for text in expected:
        assert text in row["error"], row
