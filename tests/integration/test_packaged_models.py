"""The packaged MiniLM and SmolLM2 adapted on real rows: quality well above chance, offline."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import lmadapt
from lmadapt.config import DataConfig
from lmadapt.models.inspect import inspect_data


def train(files, out, name, **extra):
    """Train on the SST-2 sample with these overrides (on top of short max_length, no leak removal)."""
    values = {
        "name": name,
        "output_dir": out,
        "data.train": files["train"],
        "data.validation": files["validation"],
        "data.test": files["test"],
        "data.drop_leaks": False,
        "model.max_length": 64,
        **extra,
    }
    return lmadapt.train(lmadapt.load_config(None, [f"{k}={v}" for k, v in values.items()]))


@pytest.fixture(scope="module")
def full_run(sst2_sample, tmp_path_factory):
    return train(sst2_sample, tmp_path_factory.mktemp("runs"), "full", **{"train.epochs": 3})


def test_full_minilm_on_real_sst2_rows(full_run):
    run = full_run
    assert run.metrics["test"]["accuracy"] >= 0.78, run.metrics["test"]  # chance is 0.5
    assert run.metrics["training"]["precision"] in ("bf16", "fp32")
    # The run folder is a plain HF model: transformers alone gives the same probabilities.
    model = AutoModelForSequenceClassification.from_pretrained(run.path / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(run.path / "model")
    texts = ["an utterly charming and funny film", "a tedious , pointless mess"]
    with torch.no_grad():
        plain = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.softmax(-1).numpy()
    assert np.allclose(plain, lmadapt.load(run.path).predictor.scores(texts), atol=1e-5)
    assert [p["label"] for p in lmadapt.load(run.path).predict(texts)] == ["positive", "negative"]


def test_head_on_frozen_minilm_beats_chance(sst2_sample, tmp_path):
    run = train(
        sst2_sample,
        tmp_path,
        "head",
        **{"strategy.name": "head", "train.epochs": 6, "train.learning_rate": 1e-2},
    )
    assert run.metrics["parameters"]["trainable"] == 384 * 2 + 2
    assert run.metrics["test"]["accuracy"] >= 0.7, run.metrics["test"]


def test_pretraining_beats_the_scratch_baseline_clearly(sst2_sample, tmp_path, full_run):
    scratch = train(sst2_sample, tmp_path, "scratch", **{"strategy.name": "scratch", "train.epochs": 6})
    assert scratch.metrics["backbone"] is None and scratch.metrics["test"]["accuracy"] >= 0.5
    assert full_run.metrics["test"]["accuracy"] >= scratch.metrics["test"]["accuracy"] + 0.1


def test_inspect_counts_minilm_tokens_on_real_data(sst2_sample):
    report = inspect_data(
        str(sst2_sample["validation"]), DataConfig(), backbone="minilm", against=[str(sst2_sample["train"])]
    )
    assert report["labels"] == {"negative": report["labels"]["negative"], "positive": report["labels"]["positive"]}
    assert 10 <= report["length_percentiles"]["p50"] <= 40 and report["truncated_share"] == 0.0


def test_smollm2_converts_once_and_lora_classifies_with_it(sst2_sample, tmp_path):
    from lmadapt.models import PACKAGED_MODELS, resolve_backbone

    folder = resolve_backbone("smollm2")
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert folder == PACKAGED_MODELS["smollm2"].converted_path()
    stamp = (folder / "model.safetensors").stat().st_mtime
    assert resolve_backbone("smollm2") == folder and (folder / "model.safetensors").stat().st_mtime == stamp
    # The causal LM as a classifier (transformers' head on its last token's state), adapted with LoRA.
    run = train(
        sst2_sample,
        tmp_path,
        "smol-lora",
        **{"model.backbone": "smollm2", "strategy.name": "lora", "train.epochs": 2, "data.max_train_rows": 400},
    )
    assert run.metrics["backbone"] == "smollm2"
    assert run.metrics["test"]["accuracy"] >= 0.6, run.metrics["test"]
    assert run.metrics["parameters"]["trainable_pct"] < 2
