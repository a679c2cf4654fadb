"""The collaborative baselines, each answering base.Recommender: popularity, ItemKNN (cosine), EASE (closed form),
and BPR / ALS from the `implicit` package (an optional dependency: pip install 'lmadapt[recommend]').

All learn from implicit feedback: a (user, item) pair in the training interactions is a 1, whatever its weight
(derive the pairs from ratings with data.implicit_feedback first where only liked items should count). A user
the model did not see in training gets the popularity ranking, so every user can be scored.

Each model is a dataclass of its settings (every field has help); `make_model(name, **settings)` builds one by
name. A fitted model saves itself into a folder (`save`) and comes back from it fitted (`load`): its settings, the
training state and its fitted arrays, in the formats of storage.py.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from lmadapt.apps.recommend.base import Catalog, UserIndex, interaction_matrix
from lmadapt.apps.recommend.metrics import top_k
from lmadapt.apps.recommend.storage import (
    load_array,
    load_catalog,
    load_settings,
    read_json,
    save_array,
    save_catalog,
    save_settings,
    write_json,
)
from lmadapt.config import option
from lmadapt.errors import LmadaptError, did_you_mean


@dataclass
class TrainingState:
    """What every model keeps from fit: the users and items it knows, each user's training items, popularity."""

    users: UserIndex
    catalog: Catalog
    seen: sp.csr_matrix  # [users, items], 1 where the user interacted with the item in training
    popularity: np.ndarray  # [items], training users per item

    @classmethod
    def from_interactions(cls, train: pd.DataFrame, catalog: Catalog) -> TrainingState:
        if train.empty:
            raise LmadaptError("there are no training interactions", where="fit", fix="check the split and its filter")
        users = UserIndex(list(pd.unique(train["user"])))
        seen = interaction_matrix(train, users, catalog)
        if seen.nnz == 0:
            raise LmadaptError(
                "no training interaction names an item of the catalogue",
                where="fit",
                fix="build the catalogue from the same data as the interactions",
            )
        return cls(users, catalog, seen, _popularity(seen))

    def save(self, folder: Path) -> None:
        write_json(folder / "users.json", self.users.ids)
        save_catalog(self.catalog, folder)
        save_array(self.seen, folder, "seen")

    @classmethod
    def load(cls, folder: Path) -> TrainingState:
        seen = load_array(folder, "seen")
        return cls(UserIndex(read_json(folder / "users.json")), load_catalog(folder), seen, _popularity(seen))

    def rows(self, users: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Row numbers of the known users among `users`, and where they stand in `users`."""
        rows = np.array([self.users.index.get(user, -1) for user in users], dtype=np.int64)
        known = np.flatnonzero(rows >= 0)
        return rows[known], known

    def columns(self, items: Sequence[str] | None) -> np.ndarray | slice:
        return slice(None) if items is None else self.catalog.positions(list(items))

    def fallback(self, users: Sequence[str], items: Sequence[str] | None) -> np.ndarray:
        """[users, items] popularity scores: what an unknown user gets."""
        return np.tile(self.popularity[self.columns(items)].astype(np.float64), (len(users), 1))


def _popularity(seen: sp.csr_matrix) -> np.ndarray:
    return np.asarray(seen.sum(axis=0)).ravel()


def _state(model) -> TrainingState:
    state = getattr(model, "state", None)
    if state is None:
        raise LmadaptError(
            f"the {model.name} model has not been fitted", where=model.name, fix="call fit(train, catalog)"
        )
    return state


def score_users(model, users: Sequence[str], items: Sequence[str] | None, score_rows) -> np.ndarray:
    """Scores for `users`: `score_rows(rows)` ([len(rows), all items]) for those seen in training, popularity for
    the others; `items` selects columns (all when None)."""
    state = _state(model)
    scores = state.fallback(users, items)
    rows, known = state.rows(users)
    if len(rows):
        scores[known] = np.asarray(score_rows(rows), dtype=np.float64)[:, state.columns(items)]
    return scores


def recommend_from_scores(model, user: str, k: int, exclude_seen: bool) -> list[tuple[str, float]]:
    """The top k (item, score) of one user, ties in catalogue order, seen items left out when asked."""
    state = _state(model)
    scores = model.score([user])[0]
    row = state.users.index.get(user)
    if exclude_seen and row is not None:
        scores[state.seen.indices[state.seen.indptr[row] : state.seen.indptr[row + 1]]] = -np.inf
    return ranked(state.catalog, scores, k)


def ranked(catalog: Catalog, scores: np.ndarray, k: int) -> list[tuple[str, float]]:
    """The top k (item, score) of one row of scores, ties in catalogue order; -inf marks an item left out."""
    best = top_k(scores[None, :], k)[0]
    return [(catalog.ids[i], float(scores[i])) for i in best if np.isfinite(scores[i])]


class Collaborative:
    """What the collaborative models share: their catalogue, recommendations for a history of items nobody trained
    on, and `save` / `load`: the settings (settings.json), the TrainingState and each of the model's `fitted` arrays
    (.npy, or .npz where sparse), so that loading needs neither the data nor a refit."""

    fitted: ClassVar[tuple[str, ...]] = ()

    @property
    def catalog(self) -> Catalog:
        """The items the model ranks, in the order of its score columns."""
        return _state(self).catalog

    def score_history(self, positions: np.ndarray) -> np.ndarray:
        """[items] scores for someone who interacted with the items at `positions` (catalogue positions)."""
        raise LmadaptError(
            f"the {self.name} model cannot score a history it did not train on: its user vectors are learnt in "
            "training",
            where=self.name,
            fix="use popularity, itemknn or ease (they score any list of items), or a text model",
        )

    def recommend_for_history(
        self,
        item_ids: Sequence[str] = (),
        text: str | None = None,
        k: int = 10,
        exclude: Sequence[str] | None = None,
    ) -> list[tuple[str, float]]:
        """Top k (item id, score) for someone the model has not trained on, from the items they interacted with;
        `exclude`: items not to recommend (None: the given items). A description needs a text model."""
        if text is not None:
            raise LmadaptError(
                f"the {self.name} model reads no text, so it cannot recommend from a description",
                where=self.name,
                fix="train a recommender with model=text, which reads items by their text",
            )
        item_ids = [item_ids] if isinstance(item_ids, str) else [str(item) for item in item_ids]
        if not item_ids:
            raise LmadaptError("no items to recommend from", where="recommend_for_history", fix="pass item_ids=[...]")
        catalog = self.catalog
        positions = np.unique(catalog.positions(item_ids))
        scores = np.array(self.score_history(positions), dtype=np.float64)
        scores[positions if exclude is None else catalog.positions([str(item) for item in exclude])] = -np.inf
        return ranked(catalog, scores, k)

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        state = _state(self)
        folder.mkdir(parents=True, exist_ok=True)
        save_settings(self, folder)
        state.save(folder)
        for name in self.fitted:
            save_array(getattr(self, name), folder, name)

    @classmethod
    def load(cls, folder: str | Path):
        folder = Path(folder)
        model = load_settings(cls, folder)
        model.state = TrainingState.load(folder)
        for name in cls.fitted:
            setattr(model, name, load_array(folder, name))
        return model


@dataclass
class Popularity(Collaborative):
    """Every user gets the items most users interacted with in training."""

    name: ClassVar[str] = "popularity"
    state: TrainingState | None = field(default=None, init=False, repr=False)

    def fit(self, train: pd.DataFrame, catalog: Catalog) -> Popularity:
        self.state = TrainingState.from_interactions(train, catalog)
        return self

    def score(self, users: Sequence[str], items: Sequence[str] | None = None) -> np.ndarray:
        return _state(self).fallback(users, items)

    def score_history(self, positions: np.ndarray) -> np.ndarray:
        return _state(self).popularity

    def recommend(self, user: str, k: int = 10, exclude_seen: bool = True) -> list[tuple[str, float]]:
        return recommend_from_scores(self, user, k, exclude_seen)


def _binary(state: TrainingState, dtype=np.float32) -> sp.csr_matrix:
    return state.seen.astype(dtype)


@dataclass
class ItemKNN(Collaborative):
    """Item-based nearest neighbours (Sarwar et al. 2001; Deshpande & Karypis 2004): item j scores the summed cosine
    similarity between j and the user's items, counting only j's `neighbours` most similar items."""

    neighbours: int = option(100, "How many most similar items each item keeps (the rest count 0).")
    shrink: float = option(0.0, "Added to the cosine's denominator: damps similarities resting on few users.")
    block: int = option(1024, "Items whose similarities are computed at once (memory: items x block floats).")
    name: ClassVar[str] = "itemknn"
    fitted: ClassVar[tuple[str, ...]] = ("similarity",)
    state: TrainingState | None = field(default=None, init=False, repr=False)
    similarity: sp.csr_matrix | None = field(default=None, init=False, repr=False)

    def fit(self, train: pd.DataFrame, catalog: Catalog) -> ItemKNN:
        if self.neighbours < 1:
            raise LmadaptError(f"neighbours must be at least 1 (got {self.neighbours})", where="itemknn.neighbours")
        self.state = TrainingState.from_interactions(train, catalog)
        matrix = _binary(self.state).tocsc()
        norms = np.sqrt(self.state.popularity.astype(np.float32))
        n_items = matrix.shape[1]
        keep = min(self.neighbours, n_items)
        rows, cols, values = [], [], []
        for start in range(0, n_items, self.block):
            stop = min(start + self.block, n_items)
            # Column j of the block: the co-occurrence of every item with item j, then the cosine.
            cooccurrence = (matrix.T @ matrix[:, start:stop]).toarray()
            cosine = cooccurrence / (norms[:, None] * norms[None, start:stop] + self.shrink + 1e-12)
            cosine[np.arange(start, stop), np.arange(stop - start)] = 0.0  # an item is not its own neighbour
            if keep < n_items:
                best = np.argpartition(-cosine, keep - 1, axis=0)[:keep]
            else:
                best = np.tile(np.arange(n_items)[:, None], (1, stop - start))
            best_values = np.take_along_axis(cosine, best, axis=0)
            positive = best_values > 0
            rows.append(best[positive])
            cols.append(np.broadcast_to(np.arange(start, stop), best.shape)[positive])
            values.append(best_values[positive])
        self.similarity = sp.csr_matrix(
            (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(n_items, n_items)
        )
        return self

    def score(self, users: Sequence[str], items: Sequence[str] | None = None) -> np.ndarray:
        seen = _binary(_state(self))
        return score_users(self, users, items, lambda rows: (seen[rows] @ self.similarity).toarray())

    def score_history(self, positions: np.ndarray) -> np.ndarray:
        return np.asarray(self.similarity[positions].sum(axis=0)).ravel()

    def recommend(self, user: str, k: int = 10, exclude_seen: bool = True) -> list[tuple[str, float]]:
        return recommend_from_scores(self, user, k, exclude_seen)


@dataclass
class EASE(Collaborative):
    """Embarrassingly Shallow Autoencoder (Steck 2019): an item-item weight matrix B with a zero diagonal that
    best rebuilds the user-item matrix X under an L2 penalty, in closed form: P = (X^T X + l2 I)^-1,
    B = -P / diag(P). A user's scores are their row of X times B. Memory: items^2 floats (only items with
    training interactions enter the inverse)."""

    l2: float = option(400.0, "The L2 penalty lambda; ml-100k's best lie around 250-500; choose it on validation.")
    name: ClassVar[str] = "ease"
    fitted: ClassVar[tuple[str, ...]] = ("weights", "active")
    state: TrainingState | None = field(default=None, init=False, repr=False)
    weights: np.ndarray | None = field(default=None, init=False, repr=False)  # [active items, active items]
    active: np.ndarray | None = field(default=None, init=False, repr=False)  # items with training interactions

    def fit(self, train: pd.DataFrame, catalog: Catalog) -> EASE:
        if self.l2 <= 0:
            raise LmadaptError(f"l2 must be positive (got {self.l2})", where="ease.l2", fix="e.g. l2=400")
        self.state = TrainingState.from_interactions(train, catalog)
        self.active = np.flatnonzero(self.state.popularity > 0)
        matrix = _binary(self.state, np.float64)[:, self.active]
        gram = (matrix.T @ matrix).toarray()
        gram[np.diag_indices_from(gram)] += self.l2
        weights = np.linalg.inv(gram)  # float64: the inverse of a large Gram matrix loses too much in float32
        del gram
        weights /= -np.diag(weights)[None, :]
        weights[np.diag_indices_from(weights)] = 0.0
        self.weights = weights.astype(np.float32)
        return self

    def score(self, users: Sequence[str], items: Sequence[str] | None = None) -> np.ndarray:
        state = _state(self)
        seen = _binary(state, np.float64)[:, self.active]

        def rows_scores(rows: np.ndarray) -> np.ndarray:
            scores = np.zeros((len(rows), len(state.catalog)))
            scores[:, self.active] = seen[rows] @ self.weights
            return scores

        return score_users(self, users, items, rows_scores)

    def score_history(self, positions: np.ndarray) -> np.ndarray:
        scores = np.zeros(len(_state(self).catalog))
        scores[self.active] = self.weights[np.isin(self.active, positions)].sum(axis=0, dtype=np.float64)
        return scores

    def recommend(self, user: str, k: int = 10, exclude_seen: bool = True) -> list[tuple[str, float]]:
        return recommend_from_scores(self, user, k, exclude_seen)


def _implicit_module():
    try:
        import implicit.cpu.als
        import implicit.cpu.bpr
    except ImportError:
        raise LmadaptError(
            "the BPR and ALS models need the package implicit, which is not installed",
            fix="pip install 'lmadapt[recommend]' (or pip install implicit)",
        ) from None
    return implicit.cpu


def _threads(threads: int) -> int:
    return threads if threads > 0 else (os.cpu_count() or 1)


@dataclass
class MatrixFactorization(Collaborative):
    """What implicit's factorisation models share: user and item vectors fitted by the library's estimator (made by
    the subclass from its settings), scores as their inner products."""

    fitted: ClassVar[tuple[str, ...]] = ("user_factors", "item_factors")
    state: TrainingState | None = field(default=None, init=False, repr=False)
    user_factors: np.ndarray | None = field(default=None, init=False, repr=False)
    item_factors: np.ndarray | None = field(default=None, init=False, repr=False)

    def estimator(self, cpu):
        """implicit's estimator (from implicit.cpu) with this model's settings."""
        raise NotImplementedError

    def fit(self, train: pd.DataFrame, catalog: Catalog):
        from threadpoolctl import threadpool_limits

        cpu = _implicit_module()
        self.state = TrainingState.from_interactions(train, catalog)
        # BLAS on one thread: implicit parallelises with its own threads, and OpenBLAS threads competing with them
        # slow it down (implicit checks, and warns).
        with threadpool_limits(1, "blas"):
            estimator = self.estimator(cpu)
            estimator.fit(_binary(self.state), show_progress=False)
        self.user_factors = np.asarray(estimator.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(estimator.item_factors, dtype=np.float32)
        return self

    def score(self, users: Sequence[str], items: Sequence[str] | None = None) -> np.ndarray:
        return score_users(self, users, items, lambda rows: self.user_factors[rows] @ self.item_factors.T)

    def recommend(self, user: str, k: int = 10, exclude_seen: bool = True) -> list[tuple[str, float]]:
        return recommend_from_scores(self, user, k, exclude_seen)


@dataclass
class BPR(MatrixFactorization):
    """Bayesian Personalised Ranking (Rendle et al. 2009): matrix factorisation fitted by SGD on (user, liked item,
    other item) triples so that liked items rank higher; implicit's implementation (an item bias included)."""

    factors: int = option(100, "Length of the user and item vectors.")
    learning_rate: float = option(0.01, "SGD step size.")
    regularization: float = option(0.01, "L2 penalty on the vectors.")
    iterations: int = option(100, "Passes over the training pairs.")
    seed: int = option(42, "Seed of the initial vectors and the sampled triples.")
    threads: int = option(0, "Threads for training; 0: one per CPU core.")
    name: ClassVar[str] = "bpr"

    def estimator(self, cpu):
        return cpu.bpr.BayesianPersonalizedRanking(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=self.iterations,
            num_threads=_threads(self.threads),
            random_state=self.seed,
        )


@dataclass
class ALS(MatrixFactorization):
    """Implicit-feedback matrix factorisation by alternating least squares (Hu, Koren & Volinsky 2008): observed
    pairs get confidence 1 + alpha; implicit's implementation (conjugate gradient)."""

    factors: int = option(64, "Length of the user and item vectors.")
    regularization: float = option(0.05, "L2 penalty on the vectors.")
    alpha: float = option(2.0, "Confidence of an observed pair relative to an unobserved one.")
    iterations: int = option(15, "Alternating passes.")
    seed: int = option(42, "Seed of the initial vectors.")
    threads: int = option(0, "Threads for training; 0: one per CPU core.")
    name: ClassVar[str] = "als"

    def estimator(self, cpu):
        return cpu.als.AlternatingLeastSquares(
            factors=self.factors,
            regularization=self.regularization,
            alpha=self.alpha,
            iterations=self.iterations,
            num_threads=_threads(self.threads),
            random_state=self.seed,
        )


MODELS = {model.name: model for model in (Popularity, ItemKNN, EASE, BPR, ALS)}


def make_model(name: str, **settings):
    """A model by name (popularity, itemknn, ease, bpr, als) with the given settings; unknown names or settings
    are an error naming the nearest valid one."""
    if name not in MODELS:
        raise LmadaptError(f"unknown recommender model '{name}'", where="model", fix=did_you_mean(name, list(MODELS)))
    model = MODELS[name]
    valid = [f.name for f in fields(model) if f.init]
    for key in settings:
        if key not in valid:
            raise LmadaptError(
                f"the {name} model has no setting '{key}'",
                where=f"model.{key}",
                fix=did_you_mean(key, valid) if valid else f"{name} takes no settings",
            )
    return model(**settings)
