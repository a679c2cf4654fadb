"""Ranking metrics over the full catalogue, each user's known items excluded, the way the field measures.

For each evaluated user every candidate item (the whole catalogue unless `candidates` narrows it) is ranked by the
model's score, best first; items the user interacted with in the data the model learnt from (`seen`) are left
out of the ranking; ties in score are ordered by catalogue position, so a ranking is the same on every run. The
relevant items are the user's test items (every test interaction counts, whatever its rating), less any seen.
Users without a relevant item are not evaluated; every evaluated user counts once in each mean, with 0 where
the model found nothing (as the recommenders project's python_evaluation does).

Per user, with rel_i = 1 when the item at rank i (1-based) is relevant, R the number of relevant items and k the
cut-off:

- precision@k = sum_{i<=k} rel_i / k (k even where fewer than k items could be ranked);
- recall@k = sum_{i<=k} rel_i / R;
- hr@k (hit rate) = 1 if any rel_i = 1 for i <= k, else 0;
- ndcg@k = DCG@k / IDCG@k, DCG@k = sum_{i<=k} rel_i / log2(i + 1), IDCG@k the DCG of min(R, k) relevant items
  ranked first (binary gains; the recommenders project's natural log gives the same ratio);
- map@k = sum_{i<=k} rel_i * precision@i / min(R, k) (the recommenders project's current map_at_k);
- map_all_relevant@k = the same sum / R: the normaliser of the `MAP` column in the recommenders project's
  MovieLens table (their `map`, and their map_at_k before it used min(R, k)); lower than map@k where R > k;
- mrr = 1 / rank of the first relevant item in the full ranking (not cut at k);
- coverage@k = share of the candidate items that appear in at least one evaluated user's top k.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from lmadapt.apps.recommend.base import Catalog, Recommender, UserIndex, interaction_matrix
from lmadapt.errors import LmadaptError

KS = (5, 10, 20)
PER_USER_METRICS = ("precision", "recall", "hr", "ndcg", "map", "map_all_relevant")


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """[rows, min(k, items)] positions of each row's k highest scores, best first; equal scores in position order.

    argpartition finds the k best in linear time; only rows where equal scores straddle the k-th place (where
    argpartition's choice among them is arbitrary) are sorted in full, stably."""
    rows, items = scores.shape
    k = min(k, items)
    if k == 0:
        return np.empty((rows, 0), dtype=np.int64)
    best = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < items else np.tile(np.arange(items), (rows, 1))
    values = np.take_along_axis(scores, best, axis=1)
    best = np.take_along_axis(best, np.lexsort((best, -values), axis=1), axis=1)
    kth = np.take_along_axis(scores, best[:, -1:], axis=1)
    ambiguous = np.flatnonzero((scores >= kth).sum(axis=1) > k)
    for row in ambiguous:
        best[row] = np.argsort(-scores[row], kind="stable")[:k]
    return best


def batch_metrics(
    scores: np.ndarray, relevant: np.ndarray, valid: np.ndarray, ks: Sequence[int] = KS
) -> tuple[dict[str, np.ndarray], dict[int, np.ndarray]]:
    """Per-user metrics for one batch: `scores`, `relevant` (bool) and `valid` (bool: a candidate not seen) are
    [users, items]. Returns {metric_at_k or mrr: [users]} and, per k, the positions each user was shown (-1 where
    fewer than k valid items exist) for coverage."""
    scores = np.where(valid & ~np.isnan(scores), scores, -np.inf)
    relevant = relevant & valid
    n_relevant = relevant.sum(axis=1)
    if (n_relevant == 0).any():
        raise ValueError("every user in a batch needs at least one relevant item")
    ranked = top_k(scores, max(ks))
    shown = np.take_along_axis(valid, ranked, axis=1)
    hits = np.take_along_axis(relevant, ranked, axis=1) & shown
    discounts = 1.0 / np.log2(np.arange(2, ranked.shape[1] + 2))
    precision_at_i = np.cumsum(hits, axis=1) / np.arange(1, ranked.shape[1] + 1)
    out: dict[str, np.ndarray] = {}
    positions: dict[int, np.ndarray] = {}
    for k in ks:
        hits_k = hits[:, :k]
        found = hits_k.sum(axis=1)
        ideal = np.cumsum(discounts[:k])[np.minimum(n_relevant, k) - 1]
        average_precision = (precision_at_i[:, :k] * hits_k).sum(axis=1)
        out[f"precision_at_{k}"] = found / k
        out[f"recall_at_{k}"] = found / n_relevant
        out[f"hr_at_{k}"] = (found > 0).astype(float)
        out[f"ndcg_at_{k}"] = (hits_k * discounts[: hits_k.shape[1]]).sum(axis=1) / ideal
        out[f"map_at_{k}"] = average_precision / np.minimum(n_relevant, k)
        out[f"map_all_relevant_at_{k}"] = average_precision / n_relevant
        positions[k] = np.where(shown[:, :k], ranked[:, :k], -1)
    # The first relevant item: highest score, then lowest position; its rank counts the valid items before it.
    relevant_scores = np.where(relevant, scores, -np.inf)
    best_score = relevant_scores.max(axis=1, keepdims=True)
    first = np.argmax(relevant & (relevant_scores == best_score), axis=1)[:, None]
    before = valid & ((scores > best_score) | ((scores == best_score) & (np.arange(scores.shape[1]) < first)))
    out["mrr"] = 1.0 / (1 + before.sum(axis=1))
    return out, positions


def evaluate(
    model: Recommender,
    test: pd.DataFrame,
    seen: pd.DataFrame,
    catalog: Catalog,
    ks: Sequence[int] = KS,
    candidates: Sequence[str] | None = None,
    batch_size: int = 512,
    per_user: bool = False,
) -> dict:
    """Full-ranking metrics of `model` on the `test` interactions (see the module's docstring), every item the user
    has in `seen` (what the model learnt from) excluded. `candidates` narrows the ranking to those items (e.g. the
    held-out items of a cold-start split). Returns the means, the number of users and, with `per_user`, the
    per-user values as a DataFrame under 'per_user'."""
    ks = tuple(sorted(set(int(k) for k in ks)))
    if not ks or ks[0] < 1:
        raise LmadaptError(
            f"cut-offs must be positive integers (got {ks})", where="evaluate", fix="e.g. ks=(5, 10, 20)"
        )
    candidate_mask = np.ones(len(catalog), dtype=bool)
    if candidates is not None:
        candidate_mask[:] = False
        candidate_mask[catalog.positions(list(candidates))] = True
    test = test[test["item"].isin(catalog.index)]
    users = UserIndex(list(pd.unique(test["user"])))
    relevant = interaction_matrix(test, users, catalog)
    excluded = interaction_matrix(seen, users, catalog)
    relevant = relevant - relevant.multiply(excluded)
    relevant = relevant.multiply(candidate_mask[None, :]).tocsr()
    relevant.eliminate_zeros()
    evaluated = np.flatnonzero(np.diff(relevant.indptr) > 0)
    if not len(evaluated):
        raise LmadaptError(
            "no test user has a relevant item that is a candidate and was not seen",
            where="evaluate",
            fix="check that the test interactions name catalogue items the users have not seen in training",
        )
    values: dict[str, list[np.ndarray]] = {}
    covered = {k: np.zeros(len(catalog), dtype=bool) for k in ks}
    for start in range(0, len(evaluated), batch_size):
        rows = evaluated[start : start + batch_size]
        scores = np.asarray(model.score([users.ids[r] for r in rows]), dtype=np.float64)
        if scores.shape != (len(rows), len(catalog)):
            raise ValueError(f"{model.name}.score returned {scores.shape}, expected {(len(rows), len(catalog))}")
        valid = candidate_mask[None, :] & ~_dense(excluded[rows])
        batch, positions = batch_metrics(scores, _dense(relevant[rows]), valid, ks)
        for name, array in batch.items():
            values.setdefault(name, []).append(array)
        for k in ks:
            shown = positions[k][positions[k] >= 0]
            covered[k][shown] = True
    per_user_values = {name: np.concatenate(arrays) for name, arrays in values.items()}
    result: dict = {name: float(array.mean()) for name, array in per_user_values.items()}
    n_candidates = int(candidate_mask.sum())
    for k in ks:
        result[f"coverage_at_{k}"] = float(covered[k][candidate_mask].sum() / n_candidates)
    result["users"] = len(evaluated)
    result["candidates"] = n_candidates
    if per_user:
        result["per_user"] = pd.DataFrame({"user": [users.ids[r] for r in evaluated], **per_user_values})
    return result


def _dense(matrix: sp.spmatrix) -> np.ndarray:
    return matrix.toarray() > 0
