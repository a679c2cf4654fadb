"""What every recommender shares: the interactions and the item catalogue as the models see them, and the one
interface they answer (fit, score, recommend).

Interactions are a pandas DataFrame with the columns `user`, `item` (string ids), `weight` (float: 1 for implicit
feedback, or the rating) and `time` (int seconds since 1970, 0 where unknown). The catalogue numbers the items
(the columns of every score matrix) and holds each item's text."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp

from lmadapt.errors import LmadaptError

INTERACTION_COLUMNS = ("user", "item", "weight", "time")


@dataclass
class Catalog:
    """The items, numbered: `ids[i]` is item i; `texts[i]` its text ("" where it has none)."""

    ids: list[str]
    texts: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not self.texts:
            self.texts = [""] * len(self.ids)
        if len(self.texts) != len(self.ids):
            raise ValueError(f"{len(self.texts)} texts for {len(self.ids)} items")
        self.index = {item: i for i, item in enumerate(self.ids)}
        if len(self.index) != len(self.ids):
            raise LmadaptError("the catalogue repeats an item id", where="items", fix="give each item once")

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, items: Sequence[str]) -> np.ndarray:
        """Positions of known items; an unknown id is an error naming it."""
        try:
            return np.fromiter((self.index[item] for item in items), dtype=np.int64, count=len(items))
        except KeyError as error:
            raise LmadaptError(
                f"item '{error.args[0]}' is not in the catalogue", where="items", fix="add its text first"
            ) from None


@dataclass
class UserIndex:
    """The users, numbered: `ids[u]` is user u."""

    ids: list[str]

    def __post_init__(self):
        self.index = {user: u for u, user in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)


def interaction_matrix(
    interactions: pd.DataFrame, users: UserIndex, catalog: Catalog, binary: bool = True
) -> sp.csr_matrix:
    """[users, items] sparse matrix of the interactions (1 per pair when binary, else the summed weights); pairs of
    users or items outside the indexes are dropped."""
    user = interactions["user"].map(users.index)
    item = interactions["item"].map(catalog.index)
    known = user.notna() & item.notna()
    values = np.ones(int(known.sum())) if binary else interactions.loc[known, "weight"].to_numpy(dtype=float)
    matrix = sp.csr_matrix(
        (values, (user[known].astype(np.int64), item[known].astype(np.int64))), shape=(len(users), len(catalog))
    )
    if binary:
        matrix.data[:] = 1.0
    return matrix


class Recommender(Protocol):
    """One interface for every model: popularity, ItemKNN, EASE, BPR/ALS, the text model, the hybrid."""

    name: str
    catalog: Catalog  # after fit: the items it ranks, in the order of its score columns

    def fit(self, train: pd.DataFrame, catalog: Catalog) -> Recommender:
        """Learn from the training interactions; the catalogue gives every item the model may recommend."""

    def score(self, users: Sequence[str], items: Sequence[str] | None = None) -> np.ndarray:
        """[len(users), len(items)] scores, higher is better (items: the whole catalogue when None). Unknown users
        get the model's fallback (e.g. popularity) or an error saying the model cannot score them."""

    def recommend(self, user: str, k: int = 10, exclude_seen: bool = True) -> list[tuple[str, float]]:
        """The user's top k (item id, score), best first; without the items the user interacted with in training
        when exclude_seen."""

    def recommend_for_history(
        self, item_ids: Sequence[str] = (), text: str | None = None, k: int = 10, exclude: Sequence[str] | None = None
    ) -> list[tuple[str, float]]:
        """Top k (item id, score) for someone the model did not train on: from the items they interacted with (oldest
        first) and/or a description; `exclude`: items not to recommend (None: the given items). What the model
        cannot read is an error saying which model can."""

    def save(self, folder: Path) -> None:
        """Write the fitted model into `folder` (created if need be): its settings and all it needs to answer, so
        that `load` gives the same scores without the data, a refit or re-encoding. Nothing pickled."""

    @classmethod
    def load(cls, folder: Path) -> Recommender:
        """The fitted model `save` wrote into `folder`."""
