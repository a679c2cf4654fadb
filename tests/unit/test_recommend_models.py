"""The collaborative baselines: each recovers an obvious co-occurrence pattern, scores unknown users, recommends
unseen items, and learns from nothing but its training interactions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lmadapt.apps.recommend.base import Catalog
from lmadapt.apps.recommend.metrics import evaluate
from lmadapt.apps.recommend.models import MODELS, make_model
from lmadapt.apps.recommend.splits import random_split
from lmadapt.errors import LmadaptError

SETTINGS = {
    "popularity": {},
    "itemknn": {"neighbours": 10},
    "ease": {"l2": 5.0},
    "bpr": {"factors": 8, "learning_rate": 0.05, "iterations": 200, "threads": 1},
    "als": {"factors": 2, "regularization": 0.1, "iterations": 15, "threads": 1},
}


def two_tastes(users_per_group: int = 30, items_per_group: int = 8, per_user: int = 5, seed: int = 0):
    """Group A users take items a0..a7, group B users b0..b7; each user has `per_user` of their group's items.
    Group A is the larger, so popularity alone favours a-items for everyone."""
    rng = np.random.default_rng(seed)
    rows = []
    for group, users in (("a", users_per_group + 10), ("b", users_per_group)):
        for u in range(users):
            for item in rng.choice(items_per_group, size=per_user, replace=False):
                rows.append((f"{group}-user{u}", f"{group}{item}", 1.0, 0))
    train = pd.DataFrame(rows, columns=["user", "item", "weight", "time"])
    catalog = Catalog([f"{g}{i}" for g in "ab" for i in range(items_per_group)])
    return train, catalog


@pytest.mark.parametrize("name", ["itemknn", "ease", "bpr", "als"])
def test_personalised_models_recover_each_users_taste(name):
    train, catalog = two_tastes()
    model = make_model(name, **SETTINGS[name]).fit(train, catalog)
    # Every b-user's 3 unseen b-items must come before every a-item, though a-items are more popular.
    b_users = [u for u in model.state.users.ids if u.startswith("b-")]
    right = 0
    for user in b_users:
        top3 = {item for item, _ in model.recommend(user, k=3)}
        right += all(item.startswith("b") for item in top3)
    assert right / len(b_users) >= 0.9, (name, right, len(b_users))


def test_popularity_recommends_the_most_taken_unseen_items_and_scores_anyone():
    train = pd.DataFrame(
        {"user": ["u1", "u1", "u2", "u2", "u3"], "item": ["x", "y", "x", "z", "x"], "weight": 1.0, "time": 0}
    )
    catalog = Catalog(["w", "x", "y", "z"])
    model = make_model("popularity").fit(train, catalog)
    assert model.recommend("u3", k=2) == [("y", 1.0), ("z", 1.0)]  # x seen; y and z tie, catalogue order
    assert model.recommend("u3", k=2, exclude_seen=False) == [("x", 3.0), ("y", 1.0)]
    assert model.recommend("nobody", k=1) == [("x", 3.0)]
    assert model.score(["nobody", "u1"], ["z", "w"]).tolist() == [[1.0, 0.0], [1.0, 0.0]]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_answers_the_interface(name):
    train, catalog = two_tastes(users_per_group=6)
    model = make_model(name, **SETTINGS[name])
    assert model.fit(train, catalog) is model and model.name == name
    scores = model.score(["b-user0", "stranger"])
    assert scores.shape == (2, len(catalog)) and np.isfinite(scores).all()
    # A user the model never saw gets the popularity ranking.
    assert np.argmax(scores[1]) == np.argmax(model.state.popularity)
    assert model.score(["b-user0"], ["b1", "a0"]).shape == (1, 2)
    recommended = model.recommend("b-user0", k=len(catalog))
    seen = set(train.loc[train["user"] == "b-user0", "item"])
    assert len(recommended) == len(catalog) - len(seen) and not seen & {item for item, _ in recommended}
    scores_listed = [score for _, score in recommended]
    assert scores_listed == sorted(scores_listed, reverse=True)
    with pytest.raises(LmadaptError, match="item 'nope' is not in the catalogue"):
        model.score(["b-user0"], ["nope"])


def test_models_learn_only_from_the_training_split():
    train, catalog = two_tastes(users_per_group=10)
    split = random_split(train, 0.75, seed=1)
    model = make_model("ease", l2=5.0).fit(split.train, catalog)
    learnt = model.state.seen.tocoo()
    learnt_pairs = {(model.state.users.ids[u], catalog.ids[i]) for u, i in zip(learnt.row, learnt.col)}
    assert learnt_pairs == set(zip(split.train["user"], split.train["item"]))
    assert not learnt_pairs & set(zip(split.test["user"], split.test["item"]))
    # The held-out quarter is found well above popularity's level.
    ease = evaluate(model, split.test, split.train, catalog, ks=(3,))
    popularity = evaluate(make_model("popularity").fit(split.train, catalog), split.test, split.train, catalog, ks=(3,))
    assert ease["ndcg_at_3"] > popularity["ndcg_at_3"] + 0.2


def test_bad_models_and_settings_are_named():
    with pytest.raises(LmadaptError, match="unknown recommender model 'eas'") as error:
        make_model("eas")
    assert "did you mean 'ease'" in str(error.value)
    with pytest.raises(LmadaptError, match="the ease model has no setting 'lambda'") as error:
        make_model("ease", **{"lambda": 3.0})
    assert "valid: l2" in str(error.value)
    with pytest.raises(LmadaptError, match="l2 must be positive"):
        make_model("ease", l2=0.0).fit(*two_tastes(users_per_group=2))
    with pytest.raises(LmadaptError, match="the itemknn model has not been fitted"):
        make_model("itemknn").score(["u"])
    train, catalog = two_tastes(users_per_group=2)
    with pytest.raises(LmadaptError, match="no training interaction names an item of the catalogue"):
        make_model("popularity").fit(train, Catalog(["elsewhere"]))
