"""The contract every registered strategy keeps, tested over the registry itself: a strategy registered tomorrow is
tested here without anyone adding a row.

Each trains (or builds, zero-shot) on a tiny random-weight model of the kind its default backbone is, saves its run
folder, reloads it to the very logits the trained model gave, leaves every weight it froze untouched, and reports the
trainable count of the model it trained. Every strategy that trains an encoder gives each text a feature vector (the
input of its classification head), which out-of-scope detection reads.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import lmadapt
from lmadapt.inference.predictor import Predictor
from lmadapt.models.packaged import PACKAGED_MODELS
from lmadapt.runs import load_run
from lmadapt.strategies import STRATEGIES
from lmadapt.training import engine
from tests.conftest import save_tiny_llama, sentiment_rows, tiny_overrides, write_three_splits

TEXTS = ["the film was great", "a dull and boring plot", "really quite superb music", "lifeless 7", "and the"]
# Label names the tiny vocabulary holds: strategies that read label names as words (verbalizers) need them.
LABEL_WORDS = {"positive": "great", "negative": "awful"}


@pytest.fixture(scope="module")
def long_context_llama(tuned_tiny_bert, tmp_path_factory):
    """The tiny Llama with room for every training row as a demonstration (in-context strategies)."""
    from transformers import AutoTokenizer

    return save_tiny_llama(AutoTokenizer.from_pretrained(tuned_tiny_bert), tmp_path_factory.mktemp("llama"), 8192)


@pytest.fixture
def word_labelled_files(tmp_path):
    frame = sentiment_rows(360)
    frame["label"] = frame["label"].map(LABEL_WORDS)
    return write_three_splits(tmp_path, frame)


def tiny_settings(strategy, encoder, causal_lm) -> dict:
    """The tiny model of the kind the strategy's default backbone is, and the tiny encoder wherever one of its
    options names a packaged model (e.g. incontext's demonstration encoder)."""
    tiny = {"encoder": encoder, "causal-lm": causal_lm}
    settings = {"model.backbone": tiny[PACKAGED_MODELS[strategy.default_backbone].kind]}
    for option in dataclasses.fields(strategy.config_class):
        if option.default in PACKAGED_MODELS:
            settings[f"strategy.{option.name}"] = tiny[PACKAGED_MODELS[option.default].kind]
    return settings


class Spy:
    """The weights right after the strategy prepared its model, and the trained model's logits as it is saved."""

    def __init__(self, monkeypatch):
        self.before: dict[str, torch.Tensor] = {}
        self.frozen: set[str] = set()
        self.trainable = 0
        wrapped_get_strategy, wrapped_save_run = engine.get_strategy, engine.save_run

        def get_strategy(name):
            strategy = wrapped_get_strategy(name)

            def prepare(context, options):
                prepared = strategy.prepare(context, options)
                named = dict(prepared.model.named_parameters())
                self.before = {n: p.detach().clone() for n, p in named.items()}
                self.frozen = {n for n, p in named.items() if not p.requires_grad}
                return prepared

            return dataclasses.replace(strategy, prepare=prepare)

        def save_run(final, config, strategy, backbone, prepared, labels, metrics, history, **kwargs):
            self.model = prepared.model
            predictor = Predictor(prepared.model, prepared.tokenizer, labels, config.model.max_length)
            self.logits = predictor.logits(TEXTS)
            return wrapped_save_run(final, config, strategy, backbone, prepared, labels, metrics, history, **kwargs)

        monkeypatch.setattr(engine, "get_strategy", get_strategy)
        monkeypatch.setattr(engine, "save_run", save_run)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_every_registered_strategy_keeps_the_contract(
    name, monkeypatch, tuned_tiny_bert, long_context_llama, word_labelled_files, tmp_path
):
    strategy = STRATEGIES[name]
    spy = Spy(monkeypatch)
    settings = {
        "strategy.name": name,
        "train.epochs": 1,
        "data.shots_per_class": 8,  # a few rows: enough to train, and every strategy's training stays short
        "train.batch_size": 4,  # steps after the warm-up's first (at a zero learning rate)
        **(tiny_settings(strategy, tuned_tiny_bert, long_context_llama) if strategy.uses_backbone else {}),
    }
    overrides = tiny_overrides(tuned_tiny_bert, word_labelled_files, tmp_path / "runs", name, **settings)
    run = engine.train(lmadapt.load_config(None, overrides))

    reloaded = load_run(run.path)
    np.testing.assert_allclose(reloaded.predictor.logits(TEXTS), spy.logits, rtol=0, atol=1e-5)
    assert [r["label"] for r in reloaded.predict(TEXTS)] == [
        reloaded.labels.labels[i] for i in spy.logits.argmax(axis=1)
    ]

    after = dict(spy.model.named_parameters())
    moved = sorted(n for n in spy.frozen if n in after and not torch.equal(spy.before[n], after[n].detach()))
    assert not moved, f"{name} changed weights it froze: {moved[:5]}"

    if strategy.trains and strategy.uses_backbone and PACKAGED_MODELS[strategy.default_backbone].kind == "encoder":
        logits, features = reloaded.predictor.logits_and_features(TEXTS)
        np.testing.assert_allclose(logits, spy.logits, rtol=0, atol=1e-5)
        assert features.ndim == 2 and len(features) == len(TEXTS) and features.shape[1] > 1

    reported = run.metrics["parameters"]
    assert reported == engine.count_parameters(spy.model) or not strategy.trains
    assert 0 <= reported["trainable"] <= reported["total"] and reported["total"] > 0
    if strategy.trains:
        assert reported["trainable"] > 0
        changed = [n for n, p in after.items() if n in spy.before and not torch.equal(spy.before[n], p.detach())]
        assert changed, f"{name} trained nothing"


def test_a_run_config_names_its_strategy_by_the_exact_type_of_its_section():
    for name, strategy in STRATEGIES.items():
        config = lmadapt.load_config(None, [f"strategy.name={name}"])
        assert type(config.strategy) is strategy.config_class and config.strategy_name == name

    @dataclasses.dataclass
    class ExtendedHeadConfig(STRATEGIES["head"].config_class):
        extra: int = 1

    for section in (ExtendedHeadConfig(), None):  # a registered class's subclass is not that strategy's
        with pytest.raises(TypeError, match=f"{type(section).__name__} is not a registered strategy config"):
            _ = dataclasses.replace(config, strategy=section).strategy_name
