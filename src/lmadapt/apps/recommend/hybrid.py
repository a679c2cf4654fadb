"""The hybrid ranker: candidates from the text model and a collaborative model, re-ranked by a learned combination
of their scores, popularity and recency.

fit(train, catalog) learns from the training interactions alone, in two stages:

1. Each user's last training interaction (by time, ties by the seeded hash: splits.temporal_leave_one_out's last
   item, users with 3+ interactions) is held out as the ranker's validation. The text model (its encoder fine-tuned
   here, the only time), the collaborative model and the item statistics are fitted on the rest. For each held-out
   user the candidates are the union of each source's top `candidates` unseen items; each (user, candidate) pair
   gets its features (FEATURES) and the label "is the held-out item". The learner (scikit-learn) is fitted on them.
2. The parts are refitted on the whole training set for serving: the text model reads with the encoder adapted in
   stage 1 (epochs=0, no second fine-tuning), the collaborative model and the statistics are computed again.

A user's score for a candidate is the learner's probability (in [0, 1]); an item no source proposes scores
-1 + popularity / (max popularity + 1), below every candidate and ordered by popularity, so the full ranking stays
defined. Items the user interacted with in training are never candidates. A user not seen in training gets the
popularity ranking, as the collaborative models give.

Items added after training (add_items) are read by the text model alone: they enter as the text model's candidates,
and the collaborative and statistical features see them as items nobody took in training (CF score 0, worst CF rank,
popularity 0, stale). Their text score carries the text model's popularity prior for new items (the catalogue's
median). Visitors without an account (recommend_for_history) are served by the text model: the collaborative model
knows no row for them.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from lmadapt.apps.recommend.base import Catalog
from lmadapt.apps.recommend.metrics import top_k
from lmadapt.apps.recommend.models import (
    MODELS,
    TrainingState,
    make_model,
    recommend_from_scores,
    score_users,
)
from lmadapt.apps.recommend.splits import temporal_leave_one_out
from lmadapt.apps.recommend.storage import load_array, load_settings, read_json, save_array, save_settings, write_json
from lmadapt.apps.recommend.text import TextConfig, TextRecommender, check_interactions, check_text_config
from lmadapt.config import option
from lmadapt.errors import LmadaptError, did_you_mean

LEARNERS = ("logistic", "gradient_boosting")
FEATURES = (
    "text_score",
    "cf_score",
    "text_rank",  # log(1 + rank among the user's unseen items): scores' scales differ between users
    "cf_rank",
    "popularity",  # log(1 + training users)
    "recent_popularity",  # log(1 + training interactions in the last recent_share of the training period)
    "staleness",  # time from the item's latest training interaction to the end of training, share of the period
    "time_gap",  # |user's latest training time - the item's mean interaction time|, share of the period
    "history_length",  # log(1 + the user's training interactions)
)


@dataclass
class HybridConfig:
    text: TextConfig = field(
        default_factory=TextConfig,
        metadata={"help": "The text model's settings (its encoder is fine-tuned once, in the ranker's first stage)."},
    )
    cf_model: str = option("ease", "The collaborative model: itemknn, ease, bpr or als (models.make_model).")
    cf_settings: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "The collaborative model's settings, e.g. {l2: 100} for ease."}
    )
    candidates: int = option(100, "Candidates each source (text, collaborative) proposes per user.")
    learner: str = option(
        "logistic",
        "The re-ranker: logistic (logistic regression on standardised features) or gradient_boosting "
        "(scikit-learn's HistGradientBoostingClassifier: it can overfit the few positives, one per user, and a "
        "recommender folder cannot keep it, as its trees could only be pickled).",
    )
    recent_share: float = option(
        0.1, "The last share of the training period whose interactions make an item's recent popularity."
    )
    seed: int = option(42, "Seed of the held-out interactions' ties, the learner and the text model's training.")


def check_hybrid_config(config: HybridConfig) -> None:
    """Refuse settings that cannot work, naming the key."""
    if not isinstance(config.text, TextConfig):
        raise LmadaptError(
            f"text must be a TextConfig, got {type(config.text).__name__}", where="hybrid.text", fix="TextConfig(...)"
        )
    check_text_config(config.text)
    collaborative = [name for name in MODELS if name != "popularity"]  # popularity is a feature already
    if config.cf_model not in collaborative:
        raise LmadaptError(
            f"unknown collaborative model '{config.cf_model}'",
            where="hybrid.cf_model",
            fix=did_you_mean(config.cf_model, collaborative),
        )
    if not isinstance(config.cf_settings, dict):
        raise LmadaptError(
            f"cf_settings must be a mapping, got {type(config.cf_settings).__name__}",
            where="hybrid.cf_settings",
            fix="e.g. {l2: 100}",
        )
    make_model(config.cf_model, **config.cf_settings)  # names an unknown setting
    if isinstance(config.candidates, bool) or not isinstance(config.candidates, int) or config.candidates < 1:
        raise LmadaptError(
            f"candidates must be a whole number >= 1, got {config.candidates!r}",
            where="hybrid.candidates",
            fix="e.g. 100",
        )
    if config.learner not in LEARNERS:
        raise LmadaptError(
            f"unknown learner '{config.learner}'", where="hybrid.learner", fix=did_you_mean(config.learner, LEARNERS)
        )
    if not isinstance(config.recent_share, (int, float)) or not 0 < config.recent_share <= 1:
        raise LmadaptError(
            f"recent_share must lie in (0, 1], got {config.recent_share!r}", where="hybrid.recent_share", fix="e.g. 0.1"
        )


def _learner(name: str, seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if name == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    return HistGradientBoostingClassifier(learning_rate=0.05, max_iter=200, early_stopping=False, random_state=seed)


ITEM_ARRAYS = ("popularity", "recent_popularity", "staleness", "mean_time")


@dataclass
class _ItemStatistics:
    """What the ranker knows of each item from the training interactions (time in seconds)."""

    popularity: np.ndarray
    recent_popularity: np.ndarray
    staleness: np.ndarray
    mean_time: np.ndarray
    user_last_time: dict[str, float]
    span: float

    @classmethod
    def from_interactions(cls, train: pd.DataFrame, catalog: Catalog, recent_share: float) -> _ItemStatistics:
        positions = catalog.positions(list(train["item"]))
        time = train["time"].to_numpy(dtype=np.float64)
        start, end = float(time.min()), float(time.max())
        span = max(end - start, 1.0)
        count = np.bincount(positions, minlength=len(catalog)).astype(np.float64)
        recent = np.bincount(positions[time >= end - recent_share * span], minlength=len(catalog))
        latest = np.full(len(catalog), start)
        np.maximum.at(latest, positions, time)
        mean_time = np.bincount(positions, weights=time, minlength=len(catalog)) / np.maximum(count, 1)
        mean_time[count == 0] = start  # an item nobody took looks as old as the training period
        return cls(
            popularity=np.log1p(count),
            recent_popularity=np.log1p(recent),
            staleness=(end - latest) / span,
            mean_time=mean_time,
            user_last_time=train.groupby("user")["time"].max().astype(float).to_dict(),
            span=span,
        )

    def grown(self, added: int) -> _ItemStatistics:
        """The statistics with `added` new items that nobody took in training."""

        def pad(values: np.ndarray, fill: float) -> np.ndarray:
            return np.concatenate([values, np.full(added, fill)])

        return dataclasses.replace(
            self,
            popularity=pad(self.popularity, 0.0),
            recent_popularity=pad(self.recent_popularity, 0.0),
            staleness=pad(self.staleness, 1.0),
            mean_time=pad(self.mean_time, float(self.mean_time.min()) if len(self.mean_time) else 0.0),
        )


@dataclass
class _Parts:
    """The base models and statistics fitted on one set of interactions."""

    text: TextRecommender
    cf: object  # a models.MODELS recommender
    items: _ItemStatistics
    state: TrainingState


def _ranks(scores: np.ndarray) -> np.ndarray:
    """Each entry's 0-based rank within its row, best first (ties in position order)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(scores.shape[1])[None, :], axis=1)
    return ranks


class HybridRecommender:
    """Text and collaborative candidates re-ranked by a learner fitted on each user's last training interaction
    (see the module)."""

    name = "hybrid"

    def __init__(self, config: HybridConfig | None = None):
        self.config = config or HybridConfig()
        check_hybrid_config(self.config)
        self.parts: _Parts | None = None
        self.state: TrainingState | None = None
        self.learner = None
        self.ranker_examples = 0  # (user, candidate) pairs the learner was fitted on
        self.held_out: pd.DataFrame | None = None  # the interactions whose (user, item) taught the learner

    # --- training --------------------------------------------------------------------------------------------------

    def fit(self, train: pd.DataFrame, catalog: Catalog) -> HybridRecommender:
        config = self.config
        train = check_interactions(train)
        train = train[train["item"].isin(catalog.index)]
        held = temporal_leave_one_out(train, seed=config.seed)
        if held.test.empty:
            raise LmadaptError(
                "no user has 3 or more training interactions, so none can hold out their last one to train the ranker",
                where="hybrid.fit",
                fix="train on more interactions per user",
            )
        text_config = config.text
        if config.text.epochs > 0 and not config.text.encoder_dir:
            # The stage-1 text model is dropped after fit, and its own temporary folder with it; the served text
            # model names the adapted encoder as its backbone, so the folder lives as long as the hybrid instead.
            self._workdir = tempfile.TemporaryDirectory(prefix="lmadapt-hybrid-")
            text_config = dataclasses.replace(text_config, encoder_dir=str(Path(self._workdir.name) / "encoder"))
        first = self._fit_parts(held.train_and_validation(), catalog, text_config)
        users = list(pd.unique(held.test["user"]))
        features, candidates = self._candidate_features(first, users)
        truth = dict(zip(held.test["user"], catalog.positions(list(held.test["item"]))))
        rows, columns = candidates
        target = columns == np.array([truth[users[r]] for r in rows])
        if not target.any():
            raise LmadaptError(
                "no held-out interaction is among the candidates, so the ranker has nothing to learn from",
                where="hybrid.fit",
                fix="raise candidates",
            )
        self.learner = _learner(config.learner, config.seed).fit(features, target)
        self.ranker_examples, self.held_out = len(target), held.test
        # Serving reads with the encoder adapted above: the refit fine-tunes nothing.
        reuse = dataclasses.replace(config.text, backbone=str(first.text.encoder_path), epochs=0, encoder_dir=None)
        self.parts = self._fit_parts(train, catalog, reuse)
        self.state = self.parts.state
        return self

    def _fit_parts(self, train: pd.DataFrame, catalog: Catalog, text_config: TextConfig) -> _Parts:
        config = self.config
        return _Parts(
            text=TextRecommender(text_config).fit(train, catalog),
            cf=make_model(config.cf_model, **config.cf_settings).fit(train, catalog),
            items=_ItemStatistics.from_interactions(train, catalog, config.recent_share),
            state=TrainingState.from_interactions(train, catalog),
        )

    def _candidate_features(self, parts: _Parts, users: Sequence[str]) -> tuple[np.ndarray, tuple]:
        """Features of each user's candidates ([pairs, FEATURES]) and the pairs (row in `users`, item position)."""
        n_items = len(parts.text.catalog)
        text = np.asarray(parts.text.score(users), dtype=np.float64)
        cf = np.zeros_like(text)
        cf[:, : len(parts.cf.state.catalog)] = parts.cf.score(users)  # items added later: 0, as an untaken item
        rows, known = parts.state.rows(users)
        seen = np.zeros(text.shape, dtype=bool)
        seen[known, : parts.state.seen.shape[1]] = parts.state.seen[rows].toarray() > 0
        text[seen], cf[seen] = -np.inf, -np.inf
        chosen = np.zeros(text.shape, dtype=bool)
        k = min(self.config.candidates, n_items)
        for scores in (text, cf):
            np.put_along_axis(chosen, top_k(scores, k), True, axis=1)
        chosen &= ~seen
        pair_rows, pair_items = np.nonzero(chosen)
        items = parts.items
        last_time = np.array([items.user_last_time.get(user, np.nan) for user in users])[pair_rows]
        history = np.asarray(parts.state.seen.sum(axis=1)).ravel()
        history_length = np.zeros(len(users))
        history_length[known] = history[rows]
        features = np.column_stack(
            [
                text[pair_rows, pair_items],
                cf[pair_rows, pair_items],
                np.log1p(_ranks(text)[pair_rows, pair_items]),
                np.log1p(_ranks(cf)[pair_rows, pair_items]),
                items.popularity[pair_items],
                items.recent_popularity[pair_items],
                items.staleness[pair_items],
                np.abs(last_time - items.mean_time[pair_items]) / items.span,
                np.log1p(history_length[pair_rows]),
            ]
        )
        return features, (pair_rows, pair_items)

    # --- answering -------------------------------------------------------------------------------------------------

    def _require_fitted(self) -> _Parts:
        if self.parts is None:
            raise LmadaptError("the hybrid model has not been fitted", where="hybrid", fix="call fit(train, catalog)")
        return self.parts

    def _score_rows(self, rows: np.ndarray) -> np.ndarray:
        parts = self._require_fitted()
        users = [self.state.users.ids[r] for r in rows]
        features, (pair_rows, pair_items) = self._candidate_features(parts, users)
        popularity = self.state.popularity.astype(np.float64)
        scores = np.tile(popularity / (popularity.max() + 1) - 1, (len(users), 1))  # below every candidate
        if len(pair_rows):
            scores[pair_rows, pair_items] = self.learner.predict_proba(features)[:, 1]
        return scores

    def score(self, users: Sequence[str], items: Sequence[str] | None = None) -> np.ndarray:
        """[len(users), len(items)] scores (items: the whole catalogue, added items included, when None): the
        learner's probability for each user's candidates, below them the other items by popularity; a user not
        seen in training gets the popularity ranking."""
        self._require_fitted()
        return score_users(self, [users] if isinstance(users, str) else users, items, self._score_rows)

    def recommend(self, user: str, k: int = 10, exclude_seen: bool = True) -> list[tuple[str, float]]:
        """The user's top k (item id, score), best first; seen items are never candidates, so with exclude_seen
        False they come after the candidates."""
        self._require_fitted()
        return recommend_from_scores(self, user, k, exclude_seen)

    def recommend_for_history(
        self,
        item_ids: Sequence[str] = (),
        text: str | None = None,
        k: int = 10,
        exclude: Sequence[str] | None = None,
    ) -> list[tuple[str, float]]:
        """Top k (item id, score) for someone not in training, from the items they liked and/or a description: the
        text model's answer (TextRecommender.recommend_for_history), since the collaborative model has no row for
        them."""
        return self._require_fitted().text.recommend_for_history(item_ids, text, k, exclude)

    def add_items(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        """New items by their text alone, recommendable at once: the text model encodes them (see the module for
        how the ranker sees them)."""
        parts = self._require_fitted()
        parts.text.add_items(ids, texts)
        catalog = parts.text.catalog
        added = len(catalog) - len(self.state.catalog)
        seen = sp.hstack([self.state.seen, sp.csr_matrix((self.state.seen.shape[0], added))]).tocsr()
        popularity = np.concatenate([self.state.popularity, np.zeros(added)])
        parts.state = self.state = TrainingState(self.state.users, catalog, seen, popularity)
        parts.items = parts.items.grown(added)

    # --- saved and loaded ------------------------------------------------------------------------------------------

    def check_saveable(self) -> None:
        """Refuse, before any fitting, settings whose model could not be saved."""
        if self.config.learner != "logistic":
            raise LmadaptError(
                "a gradient_boosting ranker cannot be saved: scikit-learn's trees are kept only by pickling, and "
                "lmadapt never loads a pickle",
                where="hybrid.learner",
                fix="use learner=logistic (the default) for a recommender to save; gradient_boosting can be evaluated",
            )

    def save(self, folder: str | Path) -> None:
        """Write the fitted model into `folder`: settings, the training state, the text model (text/), the
        collaborative model (cf/), the item statistics and the logistic ranker's coefficients (as numbers: nothing
        is pickled)."""
        parts = self._require_fitted()
        self.check_saveable()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_settings(self.config, folder)
        parts.state.save(folder)
        parts.text.save(folder / "text")
        parts.cf.save(folder / "cf")
        for name in ITEM_ARRAYS:
            save_array(getattr(parts.items, name), folder, name)
        scaler, logistic = self.learner[0], self.learner[-1]
        ranker = {
            "mean": scaler.mean_.tolist(),
            "scale": scaler.scale_.tolist(),
            "coef": logistic.coef_.ravel().tolist(),
            "intercept": float(logistic.intercept_[0]),
        }
        write_json(
            folder / "ranker.json", {**ranker, "span": parts.items.span, "user_last_time": parts.items.user_last_time}
        )

    @classmethod
    def load(cls, folder: str | Path) -> HybridRecommender:
        """The fitted model `save` wrote into `folder`, without refitting or re-encoding anything."""
        folder = Path(folder)
        model = cls(load_settings(HybridConfig, folder))
        ranker = read_json(folder / "ranker.json")
        items = _ItemStatistics(
            **{name: load_array(folder, name) for name in ITEM_ARRAYS},
            user_last_time=ranker["user_last_time"],
            span=ranker["span"],
        )
        state = TrainingState.load(folder)
        text = TextRecommender.load(folder / "text")
        model.parts = _Parts(text, MODELS[model.config.cf_model].load(folder / "cf"), items, state)
        model.state = state
        model.learner = _learner("logistic", model.config.seed)
        scaler, logistic = model.learner[0], model.learner[-1]
        # The fitted attributes scikit-learn's predict_proba reads, set from the saved numbers.
        scaler.mean_, scaler.scale_ = np.array(ranker["mean"]), np.array(ranker["scale"])
        scaler.var_, scaler.n_features_in_ = scaler.scale_**2, len(FEATURES)
        logistic.coef_, logistic.intercept_ = np.array([ranker["coef"]]), np.array([ranker["intercept"]])
        logistic.classes_, logistic.n_features_in_ = np.array([False, True]), len(FEATURES)
        return model

    def __repr__(self) -> str:
        config = self.config
        return f"HybridRecommender(cf_model={config.cf_model!r}, learner={config.learner!r}, fitted={self.parts is not None})"
