"""The hybrid ranker on a tiny random BERT: it learns from held-out training interactions only, fine-tunes the
encoder once, and combines text and collaborative signal that each part has only half of.

The synthetic catalogue has two kinds of items, about equally popular. Taste items name their taste's word (as in
test_recommend_text): 16 per taste, so co-occurrence is thin and the text model learns them from their words. Group
items are filler text only: the collaborative model learns them from who takes them together, the text cannot tell
them apart. Half the users take items of one taste, the other half items of one group.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lmadapt
from lmadapt.apps.recommend.base import Catalog
from lmadapt.apps.recommend.hybrid import HybridConfig, HybridRecommender
from lmadapt.apps.recommend.metrics import evaluate
from lmadapt.apps.recommend.models import make_model
from lmadapt.apps.recommend.splits import temporal_leave_one_out
from lmadapt.apps.recommend.text import TextRecommender
from lmadapt.errors import LmadaptError
from lmadapt.training.encoder import is_encoder_folder

from ..conftest import FILLER
from .test_recommend_text import TASTES, item_text, tiny_bert, tiny_config  # noqa: F401 (tiny_bert: a fixture)

GROUPS, TASTE_ITEMS, GROUP_ITEMS = 8, 16, 10


def complementary(users: int = 96, seed: int = 0) -> tuple[pd.DataFrame, Catalog]:
    """Half the users take 5 items of one taste, the other half 4 items of one group, in time order."""
    rng = random.Random(seed)
    ids = [f"i{t}-{n}" for t in range(TASTES) for n in range(TASTE_ITEMS)]
    texts = [item_text(t, rng) + f" {n}" for t in range(TASTES) for n in range(TASTE_ITEMS)]
    ids += [f"g{g}-{n}" for g in range(GROUPS) for n in range(GROUP_ITEMS)]
    texts += [" ".join(rng.sample(FILLER, 3)) + f" {n}" for g in range(GROUPS) for n in range(GROUP_ITEMS)]
    rows = []
    for u in range(users):
        if u % 2:
            taken = [f"g{u % GROUPS}-{n}" for n in rng.sample(range(GROUP_ITEMS), 4)]
        else:
            taken = [f"i{u % TASTES}-{n}" for n in rng.sample(range(TASTE_ITEMS), 5)]
        rows += [
            {"user": f"u{u}", "item": item, "weight": 1.0, "time": 1000 + 10 * step} for step, item in enumerate(taken)
        ]
    return pd.DataFrame(rows), Catalog(ids, texts)


def hybrid_config(tiny_bert, **settings) -> HybridConfig:  # noqa: F811
    return HybridConfig(text=tiny_config(tiny_bert), **{"cf_settings": {"l2": 5.0}, "candidates": 20, **settings})


@pytest.fixture(scope="module")
def fitted(tiny_bert):  # noqa: F811
    """A hybrid fitted on the train and validation part of a temporal split, counting the encoder's fine-tunings."""
    interactions, catalog = complementary()
    split = temporal_leave_one_out(interactions, seed=0)
    learn_from = split.train_and_validation()
    adapted = []
    with pytest.MonkeyPatch.context() as patch:
        adapt = lmadapt.adapt_encoder
        patch.setattr(lmadapt, "adapt_encoder", lambda *args, **kwargs: adapted.append(1) or adapt(*args, **kwargs))
        model = HybridRecommender(hybrid_config(tiny_bert)).fit(learn_from, catalog)
    return model, split, learn_from, catalog, len(adapted)


def pairs(frame: pd.DataFrame) -> set:
    return set(zip(frame["user"], frame["item"]))


def test_the_ranker_learns_from_each_users_last_training_interaction_only(fitted):
    model, split, learn_from, catalog, _ = fitted
    held = temporal_leave_one_out(learn_from, seed=model.config.seed).test
    assert pairs(model.held_out) == pairs(held) and len(held) == learn_from["user"].nunique()
    assert not pairs(model.held_out) & pairs(split.test)  # the test never teaches the ranker
    assert model.ranker_examples > len(held)  # every held-out user brought candidates
    # Served from the whole training set: the refit parts know the held-out interactions as seen.
    learnt = model.state.seen.tocoo()
    assert {(model.state.users.ids[u], catalog.ids[i]) for u, i in zip(learnt.row, learnt.col)} == pairs(learn_from)


def test_the_encoder_is_fine_tuned_once_and_reused_by_the_refit(fitted):
    model, *_, adaptations = fitted
    assert adaptations == 1
    served = model.parts.text.config
    assert served.epochs == 0 and is_encoder_folder(Path(served.backbone))  # stage 1's adapted encoder


def test_it_beats_or_matches_each_of_its_parts(fitted, tiny_bert):  # noqa: F811
    model, split, learn_from, catalog, _ = fitted
    text = TextRecommender(tiny_config(tiny_bert)).fit(learn_from, catalog)
    ease = make_model("ease", l2=5.0).fit(learn_from, catalog)
    figures = {
        name: evaluate(part, split.test, learn_from, catalog, ks=(5,))["hr_at_5"]
        for name, part in (("hybrid", model), ("text", text), ("ease", ease))
    }
    print(figures)
    assert figures["hybrid"] >= max(figures["text"], figures["ease"])


def test_full_ranking_with_seen_items_excluded_and_strangers_served(fitted):
    model, split, learn_from, catalog, _ = fitted
    scores = model.score(["u0", "u1", "stranger"])
    assert scores.shape == (3, len(catalog)) and np.isfinite(scores).all()
    assert np.argmax(scores[2]) == np.argmax(model.state.popularity)  # a stranger gets the popularity ranking
    seen = set(learn_from.loc[learn_from["user"] == "u0", "item"])
    ranked = model.recommend("u0", k=len(catalog))
    assert len(ranked) == len(catalog) - len(seen) and not seen & {item for item, _ in ranked}
    listed = [score for _, score in ranked]
    assert listed == sorted(listed, reverse=True)
    # Candidates score a probability; the items no source proposed come after them all.
    candidates = scores[0] >= 0
    assert 0 < candidates.sum() <= 2 * model.config.candidates
    assert scores[0][~candidates].max() < scores[0][candidates].min()
    assert model.score(["u0"], ["g0-1", "i0-1"]).shape == (1, 2)


def test_saved_and_loaded_it_scores_as_before(fitted, tmp_path):
    model, *_ = fitted
    model.save(tmp_path / "hybrid")
    loaded = HybridRecommender.load(tmp_path / "hybrid")
    np.testing.assert_allclose(loaded.score(["u0", "u3", "stranger"]), model.score(["u0", "u3", "stranger"]), atol=1e-6)
    assert [item for item, _ in loaded.recommend("u1", k=5)] == [item for item, _ in model.recommend("u1", k=5)]
    boosted = HybridRecommender(HybridConfig(learner="gradient_boosting"))
    boosted.parts = model.parts
    with pytest.raises(LmadaptError, match="a gradient_boosting ranker cannot be saved"):
        boosted.save(tmp_path / "boosted")


def test_a_recipe_names_the_hybrid_and_its_text_settings(tiny_bert):  # noqa: F811
    from lmadapt.apps.recommend.config import parse_recommend_config

    config = parse_recommend_config(
        {"model": "hybrid", "hybrid": {"candidates": 5, "text": {"backbone": str(tiny_bert), "epochs": 0}}}
    )
    model = config.make_model()
    assert isinstance(model, HybridRecommender) and model.config.candidates == 5 and model.config.text.epochs == 0


def test_an_added_item_is_recommendable_by_its_text(fitted):
    """The last test of the fitted model: it grows the model's catalogue."""
    model, split, learn_from, catalog, _ = fitted
    rng = random.Random(3)
    model.add_items([f"new-{t}" for t in range(TASTES)], [item_text(t, rng) for t in range(TASTES)])
    scores = model.score(["u0"])
    assert scores.shape == (1, len(catalog) + TASTES)
    assert scores[0, len(catalog)] >= 0  # new-0 is a candidate of u0 (taste 0) by its text
    assert "new-0" in {item for item, _ in model.recommend("u0", k=2 * model.config.candidates)}
    visitor = model.recommend_for_history(item_ids=["i2-0", "i2-1"], k=5)
    assert len(visitor) == 5 and {"i2-0", "i2-1"}.isdisjoint(item for item, _ in visitor)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"cf_model": "eas"}, "hybrid.cf_model: unknown collaborative model 'eas'.*\n.*did you mean 'ease'"),
        ({"cf_model": "popularity"}, "unknown collaborative model 'popularity'"),
        ({"cf_settings": {"lambda": 1.0}}, "the ease model has no setting 'lambda'"),
        ({"candidates": 0}, "hybrid.candidates: candidates must be a whole number >= 1, got 0"),
        ({"learner": "lightgbm"}, "hybrid.learner: unknown learner 'lightgbm'"),
        ({"recent_share": 0}, "hybrid.recent_share: recent_share must lie in"),
    ],
)
def test_bad_settings_are_named(tiny_bert, settings, message):  # noqa: F811
    with pytest.raises(LmadaptError, match=message):
        HybridRecommender(hybrid_config(tiny_bert, **settings))


def test_bad_use_is_refused(tiny_bert):  # noqa: F811
    with pytest.raises(LmadaptError, match="text.history_length: history_length must be a whole number"):
        HybridRecommender(HybridConfig(text=tiny_config(tiny_bert, history_length=0)))
    with pytest.raises(LmadaptError, match="the hybrid model has not been fitted"):
        HybridRecommender(hybrid_config(tiny_bert)).score(["u0"])
    interactions, catalog = complementary(users=4)
    two_each = interactions.groupby("user").head(2)
    with pytest.raises(LmadaptError, match="no user has 3 or more training interactions"):
        HybridRecommender(hybrid_config(tiny_bert)).fit(two_each, catalog)
