"""The text interest model: users and items in one vector space, on a tiny random BERT.

Users of a synthetic catalogue like items of one "taste": each item text names a taste word (POSITIVE[t]) and
its partner word (NEGATIVE[t]); a user's history names the tastes they liked. The random encoder knows nothing, so
what the model finds, it learned from the (history, next item) pairs.
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from lmadapt.apps.recommend.base import Catalog
from lmadapt.apps.recommend.text import TextConfig, TextRecommender, history_text, in_time_order
from lmadapt.errors import LmadaptError

from ..conftest import FILLER, NEGATIVE, POSITIVE, save_tiny_bert

TASTES = 8
WORDS = POSITIVE + NEGATIVE
TASTE_WORDS = [WORDS[2 * t : 2 * t + 2] for t in range(TASTES)]  # each taste its own words, none shared


def item_text(taste: int, rng: random.Random) -> str:
    """One word of the taste among filler: two items of a taste share a word only by chance, so the encoder must
    learn from the pairs that a taste's words belong together."""
    words = [rng.choice(TASTE_WORDS[taste]), *rng.sample(FILLER, 2)]
    rng.shuffle(words)
    return " ".join(words)


def synthetic(users: int = 48, items_per_taste: int = 8, likes: int = 5, seed: int = 0):
    """A catalogue of TASTES x items_per_taste items and users who each like items of one taste, in time order."""
    rng = random.Random(seed)
    ids = [f"i{t}-{n}" for t in range(TASTES) for n in range(items_per_taste)]
    texts = [item_text(t, rng) + f" {n}" for t in range(TASTES) for n in range(items_per_taste)]
    rows = []
    for u in range(users):
        taste = u % TASTES
        for step, n in enumerate(rng.sample(range(items_per_taste), likes)):
            rows.append({"user": f"u{u}", "item": f"i{taste}-{n}", "weight": 1.0, "time": 1000 + step})
    return pd.DataFrame(rows), Catalog(ids, texts)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """conftest's tiny BERT with '|' in its vocabulary: it joins histories."""
    return save_tiny_bert([*WORDS, *FILLER, "|", "-"], tmp_path_factory.mktemp("tiny-bert-bars"))


def tiny_config(tiny_bert, **settings) -> TextConfig:
    values = {
        "backbone": str(tiny_bert),
        "history_length": 3,
        "epochs": 6,
        "batch_size": 16,
        "learning_rate": 5e-3,
        "max_length": 32,
        **settings,
    }
    return TextConfig(**values)


def taste_hit_rate(model: TextRecommender, users: list[str]) -> float:
    """Share of each user's top 3 (seen excluded: 3 items of their taste are left) that is of their taste."""
    hits = [
        item.split("-")[0] == f"i{int(user[1:]) % TASTES}" for user in users for item, _ in model.recommend(user, 3)
    ]
    return float(np.mean(hits))


@pytest.fixture(scope="module")
def fitted(tiny_bert):
    train, catalog = synthetic()
    return TextRecommender(tiny_config(tiny_bert)).fit(train, catalog), train, catalog


def test_training_pairs_are_history_newest_first_then_the_next_item(tiny_bert):
    train, catalog = synthetic(users=2, likes=6)
    model = TextRecommender(tiny_config(tiny_bert, pairs_per_user=100))
    pairs = model.pairs(train.sample(frac=1, random_state=1), catalog)  # shuffled rows: time decides the order
    assert len(pairs) == 2 * 5  # every liked item after the first, per user
    ordered = in_time_order(train)
    texts = dict(zip(catalog.ids, catalog.texts))
    first_user = [texts[i] for i in ordered[ordered.user == "u0"].item]
    assert pairs[0] == (first_user[0], first_user[1])
    assert pairs[4] == (
        " | ".join([first_user[4], first_user[3], first_user[2]]),
        first_user[5],
    )  # last 3, newest first

    capped = TextRecommender(tiny_config(tiny_bert, pairs_per_user=2, max_pairs=3)).pairs(train, catalog)
    assert len(capped) == 3
    assert capped == TextRecommender(tiny_config(tiny_bert, pairs_per_user=2, max_pairs=3)).pairs(train, catalog)


def test_time_ties_are_broken_by_a_hash_not_by_item_id():
    frame = pd.DataFrame({"user": ["a"] * 4, "item": ["4", "3", "2", "1"], "weight": 1.0, "time": 5})
    order = list(in_time_order(frame).item)
    assert order == list(in_time_order(frame.iloc[::-1]).item)  # the same whatever the rows' order
    assert sorted(order) == ["1", "2", "3", "4"]
    assert history_text(["old", "mid", "new"], 2) == "new | mid"


def test_adapted_model_recommends_each_users_taste_and_beats_the_frozen_encoder(fitted, tiny_bert):
    model, train, catalog = fitted
    users = sorted(train.user.unique())
    frozen = TextRecommender(tiny_config(tiny_bert, epochs=0)).fit(train, catalog)
    adapted_rate, frozen_rate = taste_hit_rate(model, users), taste_hit_rate(frozen, users)
    print(f"share of top 3 of the user's taste: adapted {adapted_rate:.2f}, frozen {frozen_rate:.2f}")
    assert adapted_rate > 0.9 and adapted_rate > frozen_rate + 0.3

    scores = model.score(["u0", "u1"])
    assert scores.shape == (2, len(catalog))
    top = model.recommend("u0", k=5)
    assert [item for item, _ in top] == [
        catalog.ids[i] for i in np.argsort(-scores[0]) if catalog.ids[i] not in set(train[train.user == "u0"].item)
    ][:5]
    assert all(a[1] >= b[1] for a, b in zip(top, top[1:]))
    seen = set(train[train.user == "u0"].item)
    assert not seen & {item for item, _ in top}
    assert seen & {item for item, _ in model.recommend("u0", k=len(catalog), exclude_seen=False)} == seen


def test_scores_are_the_cosine_plus_the_popularity_prior_in_one_inner_product(fitted):
    model, train, catalog = fitted
    likes = train.item.value_counts().reindex(catalog.ids, fill_value=0).to_numpy()
    np.testing.assert_allclose(model.prior, 0.05 * np.log1p(likes), rtol=1e-6)
    cosine = model.score(["u5"]) - model.prior
    assert np.abs(cosine).max() <= 1 + 1e-5
    np.testing.assert_allclose(cosine, model.user_vectors[[model.users.index["u5"]]] @ model.item_vectors.T, atol=1e-6)
    # The index answers the same scores: its rows are [item vector, prior], its query [user vector, 1].
    top = model.recommend("u5", k=len(catalog), exclude_seen=False)
    by_score = model.score(["u5"])[0]
    np.testing.assert_allclose([s for _, s in top], np.sort(by_score)[::-1], atol=1e-5)


def test_a_new_item_added_by_text_is_recommendable_without_refit(fitted):
    model, train, catalog = fitted
    rng = random.Random(7)
    new_ids = [f"new-{t}" for t in range(TASTES)]
    model.add_items(new_ids, [item_text(t, rng) for t in range(TASTES)])
    assert len(model.catalog) == len(catalog) + TASTES and len(model.index) == len(model.catalog)
    assert (model.prior[-TASTES:] == np.median(model.prior[:-TASTES])).all()  # a typical item until it has likes

    scores = model.score([f"u{t}" for t in range(TASTES)], new_ids)
    assert (scores.argmax(axis=1) == np.arange(TASTES)).all()  # each taste's user ranks its new item first
    assert "new-0" in {item for item, _ in model.recommend("u0", k=8)}
    assert model.score(["u0"]).shape == (1, len(catalog) + TASTES)

    with pytest.raises(LmadaptError, match="item 'new-0' is already in the catalogue"):
        model.add_items(["new-0"], ["great film"])
    with pytest.raises(LmadaptError, match="1 item\\(s\\) have no text, first \\['x'\\]"):
        model.add_items(["x"], [" "])
    with pytest.raises(LmadaptError, match="the catalogue repeats an item id"):
        model.add_items(["y", "y"], ["great film", "dull film"])
    assert len(model.catalog) == len(model.index)  # nothing half-added


def test_an_unknown_user_is_served_from_their_items_or_a_description(fitted):
    model, train, catalog = fitted
    taste_two = [item for item in catalog.ids if item.startswith("i2-")][:3]
    found = model.recommend_for_history(item_ids=taste_two, k=5)
    assert len(found) == 5 and not set(taste_two) & {item for item, _ in found}
    assert np.mean([item.startswith("i2-") for item, _ in found]) >= 0.8

    described = model.recommend_for_history(text=" ".join(TASTE_WORDS[1]), k=5)
    assert np.mean([item.startswith("i1-") for item, _ in described]) >= 0.8
    assert model.recommend_for_history(item_ids=taste_two, k=5, exclude=[])[0][0] in set(catalog.ids)

    with pytest.raises(LmadaptError, match="user 'stranger' has no training history.*\n.*recommend_for_history"):
        model.score(["stranger"])
    with pytest.raises(LmadaptError, match="neither items nor a text"):
        model.recommend_for_history()
    with pytest.raises(LmadaptError, match="item 'nope' is not in the catalogue"):
        model.recommend_for_history(item_ids=["nope"])
    with pytest.raises(LmadaptError, match="cannot read these texts"):
        model.recommend_for_history(text="这部电影非常精彩，我很喜欢这个故事和音乐")
    with pytest.raises(LmadaptError, match="k must be a whole number >= 1"):
        model.recommend("u0", k=0)


def test_bad_input_and_settings_are_refused_with_what_is_wrong(tiny_bert):
    train, catalog = synthetic(users=4)
    with pytest.raises(LmadaptError, match="text.index: unknown index kind 'numpi'.*\n.*did you mean 'numpy'"):
        TextRecommender(tiny_config(tiny_bert, index="numpi"))
    with pytest.raises(LmadaptError, match="popularity_weight must be 0 or more, got -1"):
        TextRecommender(tiny_config(tiny_bert, popularity_weight=-1))
    with pytest.raises(LmadaptError, match="history_length must be a whole number >= 1, got 0"):
        TextRecommender(tiny_config(tiny_bert, history_length=0))
    with pytest.raises(LmadaptError, match="the interactions lack the column\\(s\\) time"):
        TextRecommender(tiny_config(tiny_bert)).fit(train.drop(columns="time"), catalog)
    bare = Catalog(catalog.ids, ["", *catalog.texts[1:]])
    with pytest.raises(LmadaptError, match="1 item\\(s\\) have no text, first \\['i0-0'\\]"):
        TextRecommender(tiny_config(tiny_bert)).fit(train, bare)
    with pytest.raises(LmadaptError, match="not trained yet"):
        TextRecommender(tiny_config(tiny_bert)).recommend("u0")
    one_like = train.groupby("user").head(1)
    with pytest.raises(LmadaptError, match="0 training pair\\(s\\): users need two or more liked items"):
        TextRecommender(tiny_config(tiny_bert)).fit(one_like, catalog)


@pytest.mark.parametrize("kind", ["faiss-flat", "qdrant"])
def test_the_item_vectors_sit_in_the_configured_index(fitted, tiny_bert, kind):
    model, train, catalog = fitted
    settings = {"qdrant_path": ":memory:"} if kind == "qdrant" else {}
    other = TextRecommender(tiny_config(tiny_bert, epochs=0, index=kind, **settings)).fit(train, catalog)
    frozen = TextRecommender(tiny_config(tiny_bert, epochs=0)).fit(train, catalog)
    assert other.index.kind == kind
    assert [item for item, _ in other.recommend("u3", 5)] == [item for item, _ in frozen.recommend("u3", 5)]
    other.add_items(["fresh"], [item_text(3, random.Random(1))])
    assert len(other.index) == len(catalog) + 1
