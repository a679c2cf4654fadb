"""The text interest model: users and items in one vector space, read by an adapted sentence encoder.

An item's vector is its text's; a user's is the text of their history (the items they liked last, newest first).
The encoder is adapted on (history before an item, that item) pairs from the training interactions, with in-batch
negatives, so that a history lands near the items that come next (`lmadapt.adapt_encoder`).

A score is the cosine of the user's and the item's vectors plus a popularity prior, popularity_weight x log(1 + the
item's likes in training). In-batch negatives are other users' next items, so popular items are the commonest
negatives and the encoder learns how much likelier an item is for this user than for anyone: popularity is taken out.
The loss's softmax reads 20 x cosine, so adding log-popularity / 20 puts it back (the sampling-bias correction of
Yi et al., RecSys 2019); on ml-100k that turned the adapted model from below popularity to well above it. Both parts
are one inner product, [user vector, 1] . [item vector, prior], so the items sit in the applications' vector index
(numpy, faiss or Qdrant) as they are scored.
Because an item needs only its text, an item added after training is recommendable at once, and a visitor with no
account is served from a list of items or a description.

`save` keeps the adapted encoder folder (a named backbone such as minilm by its name), the vector index of the items
(their vectors with the prior column), the users' vectors and what each user has seen: `load` answers at once, and
loads the encoder only when a text must be read (a description, a history, a new item).
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

import lmadapt
from lmadapt.apps.recommend.base import INTERACTION_COLUMNS, Catalog, UserIndex
from lmadapt.apps.recommend.storage import (
    link_folder,
    load_array,
    load_catalog,
    load_settings,
    read_json,
    save_array,
    save_catalog,
    save_settings,
    write_json,
)
from lmadapt.apps.vectors import INDEX_KINDS, build_index, load_index, save_index
from lmadapt.config import option
from lmadapt.errors import LmadaptError, did_you_mean

HISTORY_SEPARATOR = " | "


@dataclass
class TextConfig:
    backbone: str = option(
        "minilm",
        "Encoder to adapt: a packaged alias (minilm for English; e5-multilingual for other languages), a local "
        "folder, an encoder folder from lmadapt.adapt_encoder, or a hub id.",
    )
    history_length: int = option(
        5,
        "How many of a user's latest liked items make their history text (newest first; the text is cut at "
        "max_length tokens, so the oldest go first). On ml-100k 5 items at 64 tokens beat 10 at 128, at half the "
        "training time.",
    )
    pairs_per_user: int = option(
        8,
        "Training pairs (history, next liked item) drawn per user, seeded; a user with fewer liked items gives "
        "fewer. Caps how much heavy users dominate.",
    )
    max_pairs: int = option(
        6000,
        "At most this many training pairs in all (a seeded sample): bounds the training time (minilm at "
        "max_length 64 learned from about 18 pairs a second on 2 busy CPU cores: 6000 pairs in under 6 minutes; on "
        "ml-100k 6000 pairs clearly beat 3000).",
    )
    epochs: float = option(1.0, "Passes over the training pairs; 0: no adaptation, the backbone as it is.")
    batch_size: int = option(
        32, "Pairs per batch: each pair's negatives are the other pairs' items in its batch (more: harder)."
    )
    learning_rate: float = option(2e-4, "Peak learning rate of the encoder's fine-tuning.")
    max_length: int = option(
        64, "Longest text in tokens: histories are cut there (and long item texts). Training time grows with it."
    )
    popularity_weight: float = option(
        0.05,
        "Weight of the popularity prior log(1 + the item's likes in training) added to the cosine; 0.05 = 1/20, the "
        "in-batch loss's scale, puts back the popularity that in-batch negatives take out. 0: cosine alone. Items "
        "added later get the catalogue's median prior until a refit counts their likes.",
    )
    like_threshold: float | None = option(
        None,
        "Interactions whose weight is below this are not likes: they are excluded from recommendations as seen "
        "items but are neither history nor training targets. Empty: every interaction is a like (implicit feedback).",
    )
    index: str = option(
        "numpy",
        "Vector index of the item vectors: numpy (exact, up to ~1e5 items), faiss-flat, faiss-hnsw (approximate, "
        "large catalogues), qdrant (needs qdrant_url or qdrant_path), auto.",
    )
    qdrant_url: str | None = option(None, "Qdrant server for index=qdrant, e.g. http://localhost:6333.")
    qdrant_path: str | None = option(None, "Qdrant local-mode folder for index=qdrant (':memory:' for none).")
    encoder_dir: str | None = option(
        None, "Where to write the adapted encoder folder; empty: a temporary folder that lives as long as the model."
    )
    encode_batch_size: int = option(64, "Texts per batch when encoding items and histories.")
    seed: int = option(42, "Seed of the pair sampling and the fine-tuning.")


def check_text_config(config: TextConfig) -> None:
    """Refuse settings that cannot work, naming the key."""
    positive_ints = ("history_length", "pairs_per_user", "max_pairs", "encode_batch_size")
    for name in positive_ints:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise LmadaptError(f"{name} must be a whole number >= 1, got {value!r}", where=f"text.{name}")
    if not isinstance(config.popularity_weight, (int, float)) or config.popularity_weight < 0:
        raise LmadaptError(
            f"popularity_weight must be 0 or more, got {config.popularity_weight!r}",
            where="text.popularity_weight",
            fix="e.g. 0.05; 0 scores by cosine alone",
        )
    if not isinstance(config.epochs, (int, float)) or config.epochs < 0:
        raise LmadaptError(f"epochs must be 0 or more, got {config.epochs!r}", where="text.epochs")
    if config.index not in INDEX_KINDS:
        raise LmadaptError(
            f"unknown index kind '{config.index}'", where="text.index", fix=did_you_mean(config.index, INDEX_KINDS)
        )


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def in_time_order(interactions: pd.DataFrame) -> pd.DataFrame:
    """The interactions by user, then time; ties in time broken by a hash of (user, item), never by item id."""
    tie = pd.util.hash_pandas_object(interactions[["user", "item"]], index=False).to_numpy()
    return interactions.assign(_tie=tie).sort_values(["user", "time", "_tie"], kind="stable").drop(columns="_tie")


def history_text(texts: Sequence[str], length: int) -> str:
    """The history text of items in the order they happened: the last `length`, newest first."""
    return HISTORY_SEPARATOR.join(reversed(list(texts)[-length:]))


def check_interactions(train: pd.DataFrame) -> pd.DataFrame:
    """The interactions with string user and item ids; not a DataFrame, or a column missing, is an error."""
    if not isinstance(train, pd.DataFrame):
        raise LmadaptError(
            f"the interactions must be a pandas DataFrame, got {type(train).__name__}", where="fit(train)"
        )
    missing = [column for column in INTERACTION_COLUMNS if column not in train.columns]
    if missing:
        raise LmadaptError(
            f"the interactions lack the column(s) {', '.join(missing)}",
            where="fit(train)",
            fix=f"give the columns {', '.join(INTERACTION_COLUMNS)} (see lmadapt.apps.recommend.base)",
        )
    return train.assign(user=train["user"].astype(str), item=train["item"].astype(str))


def _check_item_texts(ids: Sequence[str], texts: Sequence[str], where: str) -> None:
    empty = [item for item, text in zip(ids, texts) if not isinstance(text, str) or not text.strip()]
    if empty:
        raise LmadaptError(
            f"{len(empty)} item(s) have no text, first {empty[:5]}: the text model reads items by their text",
            where=where,
            fix="give every item a text (title, genres, description), or drop the items without one",
        )


class TextRecommender:
    """Recommendations by the cosine of a user's history vector and the items' vectors, plus the items' popularity
    prior (see the module)."""

    name = "text"

    def __init__(self, config: TextConfig | None = None):
        self.config = config or TextConfig()
        check_text_config(self.config)
        self.catalog: Catalog | None = None
        self.users: UserIndex | None = None
        self.encoder_path: Path | str | None = None
        self.training_pairs: list[tuple[str, str]] = []

    # --- training --------------------------------------------------------------------------------------------------

    def pairs(self, train: pd.DataFrame, catalog: Catalog) -> list[tuple[str, str]]:
        """(history text before a liked item, that item's text) pairs: up to pairs_per_user per user, max_pairs in
        all, seeded. A pair needs at least one liked item before its target."""
        config = self.config
        rng = np.random.default_rng(config.seed)
        liked = self._liked(check_interactions(train), catalog)
        pairs = []
        for _, items in liked.groupby("user", sort=True)["item"]:
            texts = [catalog.texts[catalog.index[item]] for item in items]
            targets = np.arange(1, len(texts))
            if len(targets) > config.pairs_per_user:
                targets = np.sort(rng.choice(targets, config.pairs_per_user, replace=False))
            pairs.extend((history_text(texts[:t], config.history_length), texts[t]) for t in targets)
        if len(pairs) > config.max_pairs:
            keep = np.sort(rng.choice(len(pairs), config.max_pairs, replace=False))
            pairs = [pairs[i] for i in keep]
        return pairs

    def _liked(self, train: pd.DataFrame, catalog: Catalog) -> pd.DataFrame:
        known = train[train["item"].isin(catalog.index)]
        if self.config.like_threshold is not None:
            known = known[known["weight"] >= self.config.like_threshold]
        return in_time_order(known)

    def fit(self, train: pd.DataFrame, catalog: Catalog) -> TextRecommender:
        """Adapt the encoder on the training interactions' pairs (unless epochs is 0), then encode every item into
        the vector index (with its popularity prior) and every user's latest history into their vector."""
        config = self.config
        train = check_interactions(train)
        _check_item_texts(catalog.ids, catalog.texts, "the catalogue")
        self.catalog = Catalog(list(catalog.ids), list(catalog.texts))
        known = train[train["item"].isin(self.catalog.index)]
        if known.empty:
            raise LmadaptError(
                "no training interaction names an item of the catalogue", where="fit", fix="check the item ids"
            )
        self.training_pairs = self.pairs(known, self.catalog) if config.epochs > 0 else []
        if config.epochs > 0:
            if len(self.training_pairs) < 2:
                raise LmadaptError(
                    f"{len(self.training_pairs)} training pair(s): users need two or more liked items to teach the "
                    "encoder what comes next",
                    where="fit",
                    fix="train on more interactions, or use epochs=0 to read items with the backbone as it is",
                )
            self.encoder_path = self._adapt(self.training_pairs)
        else:
            self.encoder_path = config.backbone
        self._embed = self._encoder(self.encoder_path)
        self.item_vectors = self._encode(self.catalog.texts)
        liked = self._liked(known, self.catalog)
        likes = np.bincount(self.catalog.positions(list(liked["item"])), minlength=len(self.catalog))
        self.prior = (config.popularity_weight * np.log1p(likes)).astype(np.float32)
        self.index = build_index(
            self._augmented(self.item_vectors, self.prior),
            config.index,
            qdrant_url=config.qdrant_url,
            qdrant_path=config.qdrant_path,
        )

        ordered = in_time_order(known)
        self.users = UserIndex(sorted(ordered["user"].unique()))
        histories = {user: list(items) for user, items in liked.groupby("user", sort=False)["item"]}
        everything = {user: list(items) for user, items in ordered.groupby("user", sort=False)["item"]}
        texts = []
        for user in self.users.ids:  # a user without a like is read from all they did
            items = histories.get(user) or everything[user]
            texts.append(
                history_text([self.catalog.texts[self.catalog.index[i]] for i in items], config.history_length)
            )
        self.user_vectors = self._encode(texts)
        self.seen = [np.unique(self.catalog.positions(everything[user])) for user in self.users.ids]
        return self

    def _adapt(self, pairs: list[tuple[str, str]]) -> Path:
        config = self.config
        if config.encoder_dir:
            output, overwrite = Path(config.encoder_dir), True
        else:
            self._workdir = tempfile.TemporaryDirectory(prefix="lmadapt-text-")  # removed with the model
            output, overwrite = Path(self._workdir.name) / "encoder", False
        return lmadapt.adapt_encoder(
            pairs,
            output,
            backbone=config.backbone,
            epochs=config.epochs,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            seed=config.seed,
            max_length=config.max_length,
            overwrite=overwrite,
        )

    def _encoder(self, path: Path | str):
        """The function from texts to vectors, the encoder loaded on its first call (a loaded model that is only
        asked for users' recommendations never needs it)."""
        load = functools.cache(
            lambda: lmadapt.encoder(
                str(path), batch_size=self.config.encode_batch_size, max_length=self.config.max_length
            )
        )
        return lambda texts: load()(texts)

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        if not len(texts):
            return np.empty((0, self.item_vectors.shape[1]), dtype=np.float32)
        return _unit(self._embed(list(texts)))

    @staticmethod
    def _augmented(vectors: np.ndarray, last: np.ndarray | float) -> np.ndarray:
        """The vectors with one more column (the items' prior, or the queries' 1): their inner product is the score."""
        column = np.broadcast_to(np.asarray(last, dtype=np.float32), (len(vectors),))[:, None]
        return np.hstack([vectors, column]).astype(np.float32)

    # --- answering -------------------------------------------------------------------------------------------------

    def _require_fitted(self) -> None:
        if self.catalog is None:
            raise LmadaptError("the text model is not trained yet", fix="call fit(train, catalog) first")

    def _user_positions(self, users: Sequence[str]) -> np.ndarray:
        if isinstance(users, str):
            users = [users]
        unknown = [user for user in users if str(user) not in self.users.index]
        if unknown:
            raise LmadaptError(
                f"user '{unknown[0]}' has no training history, so the text model has no vector for them"
                + (f" ({len(unknown)} such users)" if len(unknown) > 1 else ""),
                where="score",
                fix="recommend from what they did or described: recommend_for_history(item_ids=[...], text=...)",
            )
        return np.array([self.users.index[str(user)] for user in users], dtype=np.int64)

    def score(self, users: Sequence[str], items: Sequence[str] | None = None) -> np.ndarray:
        """[len(users), len(items)] scores: the cosine of each user's history vector and each item's vector plus the
        item's popularity prior (items: the whole catalogue, added items included, when None). A user without
        training history is an error."""
        self._require_fitted()
        queries = self.user_vectors[self._user_positions(users)]
        positions = slice(None) if items is None else self.catalog.positions(list(items))
        return queries @ self.item_vectors[positions].T + self.prior[positions]

    def _top(self, query: np.ndarray, k: int, exclude: np.ndarray) -> list[tuple[str, float]]:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise LmadaptError(f"k must be a whole number >= 1, got {k!r}", where="recommend", fix="e.g. k=10")
        wanted = min(k + len(exclude), len(self.catalog))
        similarities, ids = self.index.search(self._augmented(query[None, :], 1.0), wanted)
        excluded = set(exclude.tolist())
        found = [
            (self.catalog.ids[i], float(s))
            for s, i in zip(similarities[0], ids[0])
            if i >= 0 and int(i) not in excluded
        ]
        return found[:k]

    def recommend(self, user: str, k: int = 10, exclude_seen: bool = True) -> list[tuple[str, float]]:
        """The user's top k (item id, score), best first, from the vector index; without the items they interacted
        with in training when exclude_seen."""
        self._require_fitted()
        position = self._user_positions([user])[0]
        exclude = self.seen[position] if exclude_seen else np.empty(0, dtype=np.int64)
        return self._top(self.user_vectors[position], k, exclude)

    def history_query(self, item_ids: Sequence[str] = (), text: str | None = None) -> str:
        """The text a visitor is read by: their description, then their items (oldest first in `item_ids`) as a
        history, newest first."""
        self._require_fitted()
        if isinstance(item_ids, str):
            item_ids = [item_ids]
        parts = []
        if text is not None:
            if not isinstance(text, str) or not text.strip():
                raise LmadaptError("text is empty", where="recommend_for_history", fix="describe what they like")
            parts.append(text.strip())
        if len(item_ids):
            positions = self.catalog.positions([str(item) for item in item_ids])
            parts.append(history_text([self.catalog.texts[p] for p in positions], self.config.history_length))
        if not parts:
            raise LmadaptError(
                "neither items nor a text to recommend from",
                where="recommend_for_history",
                fix="pass item_ids=[...] (what they liked, oldest first), text='...' (what they like), or both",
            )
        return HISTORY_SEPARATOR.join(parts)

    def recommend_for_history(
        self,
        item_ids: Sequence[str] = (),
        text: str | None = None,
        k: int = 10,
        exclude: Sequence[str] | None = None,
    ) -> list[tuple[str, float]]:
        """Top k (item id, score) for someone the model has not trained on: from the items they liked (oldest
        first), a free-text description of what they like, or both. `exclude`: items not to recommend (None: the
        given items)."""
        query = self._encode([self.history_query(item_ids, text)])[0]
        exclude = item_ids if exclude is None else exclude
        exclude = [exclude] if isinstance(exclude, str) else [str(item) for item in exclude]
        return self._top(query, k, np.unique(self.catalog.positions(exclude)))

    # --- the catalogue grows ----------------------------------------------------------------------------------------

    def add_items(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        """New items, by their text alone: encoded, appended to the catalogue and the vector index, and
        recommendable at once (no retraining)."""
        self._require_fitted()
        ids = [ids] if isinstance(ids, str) else [str(item) for item in ids]
        texts = [texts] if isinstance(texts, str) else list(texts)
        if len(ids) != len(texts):
            raise LmadaptError(f"{len(ids)} ids for {len(texts)} texts", where="add_items", fix="one text per item")
        known = [item for item in ids if item in self.catalog.index]
        if known:
            raise LmadaptError(
                f"item '{known[0]}' is already in the catalogue", where="add_items", fix="give new items new ids"
            )
        _check_item_texts(ids, texts, "add_items")
        catalog = Catalog(self.catalog.ids + ids, self.catalog.texts + texts)  # refuses an id given twice
        vectors = self._encode(texts)
        prior = np.full(len(ids), np.median(self.prior) if len(self.prior) else 0.0, dtype=np.float32)
        self.index.add(self._augmented(vectors, prior))
        self.item_vectors = np.concatenate([self.item_vectors, vectors])
        self.prior = np.concatenate([self.prior, prior])
        self.catalog = catalog

    # --- saved and loaded ------------------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        """Write the fitted model into `folder`: settings, catalogue, users, their vectors and seen items, the item
        index (vectors and prior) and the encoder (its folder, or the backbone's name when it was not adapted)."""
        self._require_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_settings(self.config, folder)
        save_catalog(self.catalog, folder)
        write_json(folder / "users.json", self.users.ids)
        save_array(self.user_vectors, folder, "user_vectors")
        lengths = [len(items) for items in self.seen]
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        indices = np.concatenate(self.seen) if self.seen else np.empty(0, dtype=np.int64)
        shape = (len(self.users), len(self.catalog))
        save_array(sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=shape), folder, "seen")
        save_index(self.index, folder / "index")
        if Path(str(self.encoder_path)).is_dir():
            link_folder(Path(self.encoder_path), folder / "encoder")
            encoder = "encoder"
        else:
            encoder = str(self.encoder_path)  # a packaged alias or hub id, resolved again on load
        write_json(folder / "text.json", {"encoder": encoder, "folder": encoder == "encoder"})

    @classmethod
    def load(cls, folder: str | Path) -> TextRecommender:
        """The fitted model `save` wrote into `folder`, without re-encoding anything."""
        folder = Path(folder)
        model = cls(load_settings(TextConfig, folder))
        config = model.config
        model.catalog = load_catalog(folder)
        model.users = UserIndex(read_json(folder / "users.json"))
        model.user_vectors = load_array(folder, "user_vectors")
        seen = load_array(folder, "seen")
        model.seen = [seen.indices[seen.indptr[u] : seen.indptr[u + 1]].astype(np.int64) for u in range(seen.shape[0])]
        model.index = load_index(folder / "index", qdrant_url=config.qdrant_url, qdrant_path=config.qdrant_path)
        augmented = model.index.vectors()
        model.item_vectors = np.ascontiguousarray(augmented[:, :-1])
        model.prior = np.ascontiguousarray(augmented[:, -1])
        encoder = read_json(folder / "text.json")
        model.encoder_path = folder / "encoder" if encoder["folder"] else encoder["encoder"]
        model._embed = model._encoder(model.encoder_path)
        return model

    def __repr__(self) -> str:
        settings = ", ".join(f"{f.name}={getattr(self.config, f.name)!r}" for f in fields(self.config)[:4])
        return f"TextRecommender({settings}, items={len(self.catalog) if self.catalog else 0})"
