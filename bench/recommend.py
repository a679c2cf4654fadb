"""Recommendation benchmark (issue 23): collaborative baselines, the text interest model and the hybrid, three splits.

Data: MovieLens ml-100k (RecBole's copy, builtin:ml-100k) and ml-latest-small (DATA/movielens_ml_latest_small).
Evaluation: apps/recommend/metrics.evaluate, full ranking over the whole catalogue (cold start: over the held-out
items), each user's training items excluded; NDCG, Recall, Precision, MAP (normalised by min(R, k)), HR at
5/10/20, MRR, coverage. Intervals: apps/recommend/report.py (95%; t over seeds, or a bootstrap over users where a
split has one seed).

Protocols (splits: apps/recommend/splits.py, seeded hashes of the ids):
- `random_75_25`, ml-100k only: every rating is an interaction and every test rating is relevant; per user a
  seeded 75% train, 25% test: the recommenders project's MovieLens-100k table (SAR NDCG@10 0.382, BPR 0.442, BiVAE
  0.475; popularity here 0.247). Targets: popularity within 0.01 of 0.247; the best lmadapt model >= 0.442.
- `temporal_loo`, ml-100k and ml-latest-small: likes only (rating >= --like-threshold, 4 by default, as the text
  model's first measurement); per user the last like is test, the second-last validation (users with 3+ likes).
  HR@10, NDCG@10. Target: hybrid > max(text, best CF) > popularity, the best CF being the collaborative model with
  the best validation NDCG@10 (never chosen on test).
- `cold_start`, ml-100k: likes only; a seeded 15% of the liked items held out with all their interactions; the text
  models train on the rest and then read the held-out items by their text alone (TextRecommender.add_items); the
  held-out items only are ranked, for users with training likes. Recall@10 against floors: `random` (uniform
  scores; the expected figure is 10 / held-out items), `genre_popularity` (an item scores the mean training-like
  count of its genres) and `user_genre_profile` (the mean share of the user's training likes in the item's
  genres). Collaborative models cannot score an item nobody interacted with, so they are not run here.

Models. popularity, itemknn, ease, bpr, als: settings chosen on validation (GRIDS), the best refitted on train +
validation. text: TextConfig's defaults (MiniLM adapted on up to --text-max-pairs (history, next like) pairs, one
epoch), text_frozen: the same encoder unadapted (epochs 0); both fitted on train + validation, one torch thread.
hybrid: HybridRecommender with the text model's settings above and EASE with the l2 chosen on validation (as for
the ease row), fitted on train + validation (it holds out each user's last training interaction itself to learn its
re-ranker: logistic regression, the default).

Rows (--out, bench/results/recommend.json): `"row": "seed"` per dataset, split, model and seed, with the figures,
the chosen settings, the split's record, times, commit and command; `"row": "summary"` per dataset, split and model
(mean, `_std`, `_ci` over seeds); `"row": "target"` per target, met or not. A seed row already in the file for the
same dataset, split, model, seed and options is not run again unless --force: an interrupted run continues where it
stopped. The summary is printed as Markdown tables and drawn into --png.

Time on 2 busy cores, estimated from measured parts: ml-100k's collaborative rows ~6 min; ml-latest-small's ~7 min
a seed (its EASE grid alone ~3 min); ten text fits of ~6 min (6,000 pairs) plus ten frozen encodings of 1-2 min:
about 1 h 45 min in all, more once the hybrid runs (seven fits, each with its own text model).

    HF_HUB_OFFLINE=1 python bench/recommend.py                     # everything, 3 seeds (see below for the time)
    HF_HUB_OFFLINE=1 python bench/recommend.py --splits random_75_25 temporal_loo --datasets ml-100k \\
        --models popularity ease --seeds 42 --out /tmp/recommend.json   # a quick look: seconds
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from runner import ROOT, git_commit

from lmadapt.apps.recommend import report
from lmadapt.apps.recommend.base import Catalog, UserIndex, interaction_matrix
from lmadapt.apps.recommend.data import MISSING_TEXT_VALUES, implicit_feedback, load_recommendation_data
from lmadapt.apps.recommend.hybrid import HybridConfig, HybridRecommender
from lmadapt.apps.recommend.metrics import evaluate
from lmadapt.apps.recommend.models import make_model
from lmadapt.apps.recommend.splits import split_interactions
from lmadapt.apps.recommend.text import TextConfig, TextRecommender

RESULTS = ROOT / "bench" / "results" / "recommend.json"
PNG = ROOT / "bench" / "results" / "recommend.png"
DATASETS = {
    "ml-100k": lambda data: "builtin:ml-100k",
    "ml-latest-small": lambda data: data / "movielens_ml_latest_small",
}
SEEDS = (42, 43, 44)
UNTITLED = "Untitled."


def grid(**values) -> list[dict]:
    keys = list(values)
    return [dict(zip(keys, combination)) for combination in itertools.product(*values.values())]


# Small grids: 2 shared cores. The ranges follow each method's usual settings on MovieLens-sized data.
GRIDS = {
    "popularity": [{}],
    "itemknn": grid(neighbours=[50, 100, 200]),
    "ease": grid(l2=[50.0, 100.0, 250.0, 500.0, 1000.0]),
    "bpr": grid(factors=[64, 128], learning_rate=[0.005, 0.01], iterations=[50, 100]),
    "als": grid(factors=[64, 128], regularization=[10.0, 50.0], alpha=[5.0, 10.0]),
}
COLLABORATIVE = tuple(GRIDS)
TEXT = ("text_frozen", "text")
FLOORS = ("random", "genre_popularity", "user_genre_profile")
HYBRID = ("hybrid",)
PLAN = {
    "random_75_25": {"datasets": ("ml-100k",), "models": COLLABORATIVE + TEXT + HYBRID},
    "temporal_loo": {"datasets": ("ml-100k", "ml-latest-small"), "models": COLLABORATIVE + TEXT + HYBRID},
    "cold_start": {"datasets": ("ml-100k",), "models": FLOORS + TEXT},
}
POPULARITY_TARGET, BPR_PUBLISHED = 0.247, 0.442
# Leave-one-out has one relevant item, so its Recall@10 is its HR@10: not drawn twice.
PLOTTED = {
    "random_75_25": ("ndcg_at_10", "hr_at_10", "recall_at_10"),
    "temporal_loo": ("ndcg_at_10", "hr_at_10"),
    "cold_start": ("recall_at_10", "ndcg_at_10"),
}


# --- cold-start floors: what a ranking of unseen items by their genres alone achieves ------------------------------


class RandomScores:
    """Uniform random scores, seeded: the floor every ranking must beat."""

    name = "random"

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def fit(self, train: pd.DataFrame, catalog: Catalog) -> RandomScores:
        self.items = len(catalog)
        return self

    def score(self, users, items=None) -> np.ndarray:
        return self.rng.random((len(users), self.items))


class GenreFloor:
    """An item scores by its genres: the mean over them of the genre's training likes (`genre_popularity`), or of
    the share of the user's training likes in that genre (`user_genre_profile`). Many items share their genres, so
    equal scores are broken by a tiny seeded jitter drawn per user: one draw for all users would give everyone the
    same arbitrary pick from the tied items, and the figure would swing with it (0.008 to 0.043 Recall@10 on one
    ml-100k split)."""

    def __init__(self, name: str, genres: dict[str, list[str]], seed: int):
        self.name, self.genres, self.seed = name, genres, seed

    def fit(self, train: pd.DataFrame, catalog: Catalog) -> GenreFloor:
        names = sorted({genre for item in catalog.ids for genre in self.genres.get(item, [])})
        column = {genre: j for j, genre in enumerate(names)}
        pairs = [(i, column[g]) for i, item in enumerate(catalog.ids) for g in self.genres.get(item, [])]
        rows, columns = zip(*pairs)
        self.item_genres = np.zeros((len(catalog), len(names)))
        self.item_genres[rows, columns] = 1.0
        # An item's score is a mean over its genres; an item without genres scores 0.
        self.per_item = self.item_genres / np.maximum(self.item_genres.sum(axis=1, keepdims=True), 1.0)
        self.users = UserIndex(list(pd.unique(train["user"])))
        self.likes = interaction_matrix(train, self.users, catalog)
        return self

    def score(self, users, items=None) -> np.ndarray:
        rows = [self.users.index[user] for user in users]
        if self.name == "genre_popularity":
            genre_likes = np.asarray(self.likes.sum(axis=0)).ravel() @ self.item_genres
            scores = np.tile(self.per_item @ genre_likes, (len(users), 1))
        else:
            likes = self.likes[rows]
            shares = (likes @ self.item_genres) / np.maximum(np.asarray(likes.sum(axis=1)), 1.0)
            scores = shares @ self.per_item.T
        jitter = [np.random.default_rng([self.seed, row]).random(scores.shape[1]) for row in rows]
        return scores + 1e-9 * np.array(jitter)


def item_genres(data) -> dict[str, list[str]]:
    separator = data.list_separators.get("genres", " ")
    return {
        item: [
            g
            for g in (text.split(separator) if separator.strip() else text.split())
            if g.lower() not in MISSING_TEXT_VALUES
        ]
        for item, text in zip(data.items["item"], data.items["genres"])
    }


# --- one (dataset, split, seed) ------------------------------------------------------------------------------------


def with_seed(name: str, settings: dict, seed: int, threads: int) -> dict:
    return {**settings, "seed": seed, "threads": threads} if name in ("bpr", "als") else settings


def choose(name: str, split, catalog, seed: int, threads: int) -> tuple[dict, float]:
    """The settings of `name` with the best validation NDCG@10, and that figure."""
    best, best_ndcg = {}, -1.0
    for settings in GRIDS[name]:
        model = make_model(name, **with_seed(name, settings, seed, threads)).fit(split.train, catalog)
        ndcg = evaluate(model, split.validation, split.train, catalog, ks=(10,))["ndcg_at_10"]
        if ndcg > best_ndcg:
            best, best_ndcg = settings, ndcg
    return best, best_ndcg


def text_config(name: str, seed: int, args) -> TextConfig:
    return TextConfig(
        seed=seed, max_pairs=args.text_max_pairs, epochs=0.0 if name == "text_frozen" else args.text_epochs
    )


def options(split_name: str, name: str, args) -> dict:
    """What besides dataset, split, model and seed changes a row's figures: part of its key."""
    found = {} if split_name == "random_75_25" else {"like_threshold": args.like_threshold}
    if name in ("text", "hybrid"):
        found.update(text_max_pairs=args.text_max_pairs, text_epochs=args.text_epochs)
    return found


class Job:
    """A dataset's split for one seed: the interactions, the split, the catalogue without the held-out tags."""

    def __init__(self, dataset: str, data, split_name: str, seed: int, args):
        threshold = None if split_name == "random_75_25" else args.like_threshold
        interactions = implicit_feedback(data.interactions, threshold=threshold)
        extra = {"validation": 0.25} if split_name == "random_75_25" else {}
        self.dataset, self.data, self.split_name, self.seed, self.args = dataset, data, split_name, seed, args
        self.split = split_interactions(interactions, split_name, seed, **extra)
        held_out = pd.concat([self.split.validation, self.split.test], ignore_index=True)
        catalog = data.catalog(hidden_pairs=held_out, hidden_items=self.split.cold_items)
        # The text models refuse an item without text (ml-100k's item 267 is titled "unknown"); every model ranks
        # the same catalogue, so such an item is read as UNTITLED rather than dropped.
        self.catalog = Catalog(catalog.ids, [text or UNTITLED for text in catalog.texts])
        self.final_train = self.split.train_and_validation()

    def run(self, name: str) -> dict:
        """The seed row of one model: fit, evaluate with per-user values, bootstrap intervals over the users."""
        found: dict = {}
        started = time.perf_counter()
        if self.split_name == "cold_start":
            model, test, catalog, candidates = self._cold_start(name, found)
        else:
            model, test, catalog, candidates = self._warm(name, found), self.split.test, self.catalog, None
        found["fit_seconds"] = round(time.perf_counter() - started - found.get("tuning_seconds", 0), 1)
        started = time.perf_counter()
        result = evaluate(model, test, self.final_train, catalog, candidates=candidates, per_user=True)
        found["evaluate_seconds"] = round(time.perf_counter() - started, 1)
        figures = {key: round(value, 4) for key, value in result.items() if isinstance(value, float)}
        if name == "random":
            found["expected_recall_at_10"] = round(10 / result["candidates"], 4)
        return {
            **figures,
            "users": result["users"],
            "candidates": result["candidates"],
            "bootstrap": report.bootstrap_intervals(result, seed=self.seed),
            **found,
            "split_record": self.split.record,
        }

    def _warm(self, name: str, found: dict):
        if name in COLLABORATIVE:
            started = time.perf_counter()
            settings, validation_ndcg = choose(name, self.split, self.catalog, self.seed, self.args.threads)
            found.update(
                settings=settings,
                validation_ndcg_at_10=round(validation_ndcg, 4),
                tuning_seconds=round(time.perf_counter() - started, 1),
            )
            model = make_model(name, **with_seed(name, settings, self.seed, self.args.threads))
        elif name in TEXT:
            model = TextRecommender(text_config(name, self.seed, self.args))
        else:
            started = time.perf_counter()
            settings, validation_ndcg = choose("ease", self.split, self.catalog, self.seed, self.args.threads)
            found.update(
                settings={"cf_model": "ease", "cf_settings": settings},
                validation_ndcg_at_10=round(validation_ndcg, 4),
                tuning_seconds=round(time.perf_counter() - started, 1),
            )
            text = text_config("text", self.seed, self.args)
            model = HybridRecommender(HybridConfig(text=text, cf_settings=settings, seed=self.seed))
        model.fit(self.final_train, self.catalog)
        if name in TEXT:
            found["pairs"] = len(model.training_pairs)
        return model

    def _cold_start(self, name: str, found: dict):
        """The model fitted without the held-out items, the test likes of users it knows, the catalogue it scores
        over and the held-out items as the candidates."""
        cold, cold_set = self.split.cold_items, set(self.split.cold_items)
        test = self.split.test[self.split.test["user"].isin(set(self.final_train["user"]))]
        if name in TEXT:
            warm = [i for i, item in enumerate(self.catalog.ids) if item not in cold_set]
            model = TextRecommender(text_config(name, self.seed, self.args))
            model.fit(
                self.final_train, Catalog([self.catalog.ids[i] for i in warm], [self.catalog.texts[i] for i in warm])
            )
            positions = self.catalog.positions(cold)
            model.add_items(cold, [self.catalog.texts[i] for i in positions])  # new items, by their text alone
            found["pairs"] = len(model.training_pairs)
            return model, test, model.catalog, cold
        if name == "random":
            model = RandomScores(self.seed)
        else:
            model = GenreFloor(name, item_genres(self.data), self.seed)
        return model.fit(self.final_train, self.catalog), test, self.catalog, cold


# --- the rows, the summary, the targets -----------------------------------------------------------------------------


def key(row: dict) -> tuple:
    return row["dataset"], row["split"], row["model"], row["seed"], json.dumps(row["options"], sort_keys=True)


def group_key(row: dict) -> tuple:
    return row["dataset"], row["split"], row["model"], json.dumps(row["options"], sort_keys=True)


def _rounded(value):
    if isinstance(value, float):
        return round(value, 4)
    return [_rounded(v) for v in value] if isinstance(value, list) else value


def summarise(seed_rows: list[dict]) -> list[dict]:
    """A summary row per (dataset, split, model, options) over its seeds; `best_cf` marks the collaborative model
    with the best mean validation NDCG@10 of its dataset and split."""
    groups: dict[tuple, list[dict]] = {}
    for row in seed_rows:
        groups.setdefault(group_key(row), []).append(row)
    summaries = []
    for (dataset, split, model, _), rows in groups.items():
        rows = sorted(rows, key=lambda r: r["seed"])
        summary = report.summarise_model(model, rows)
        summary.update(row="summary", dataset=dataset, split=split, options=rows[0]["options"])
        summary["seed_list"] = [r["seed"] for r in rows]
        summary["commits"] = sorted({r["commit"] for r in rows})  # the seed rows carry commit and command
        if "validation_ndcg_at_10" in rows[0]:
            summary["validation_ndcg_at_10"] = round(float(np.mean([r["validation_ndcg_at_10"] for r in rows])), 4)
        summaries.append({k: _rounded(v) for k, v in summary.items()})
    for dataset, split in {(s["dataset"], s["split"]) for s in summaries}:
        cf = [s for s in summaries if (s["dataset"], s["split"]) == (dataset, split) and s["model"] in COLLABORATIVE]
        cf = [s for s in cf if s["model"] != "popularity"]
        if cf:
            max(cf, key=lambda s: s["validation_ndcg_at_10"])["best_cf"] = True
    return summaries


def _place_order(place: tuple[str, str]) -> tuple:
    """Tables and targets in the plan's order of splits, then by dataset."""
    dataset, split = place
    return list(PLAN).index(split), dataset


def _chain_met(values: list[float | None]) -> bool:
    """Every value present and each above the next."""
    return all(v is not None for v in values) and all(a > b for a, b in zip(values, values[1:]))


def targets(summaries: list[dict]) -> list[dict]:
    """The issue's targets where their rows exist, each with what was measured and whether it is met."""
    places: dict[tuple, dict[str, dict]] = {}
    for s in summaries:
        places.setdefault((s["dataset"], s["split"]), {})[s["model"]] = s
    found = []
    for (dataset, split), models in sorted(places.items(), key=lambda place: _place_order(place[0])):
        checks = []  # (target, measured, met)
        if split == "random_75_25":
            if "popularity" in models:
                value = models["popularity"]["ndcg_at_10"]
                checks.append(
                    (
                        f"popularity NDCG@10 within 0.01 of {POPULARITY_TARGET}",
                        value,
                        abs(value - POPULARITY_TARGET) <= 0.01,
                    )
                )
            others = [s for name, s in models.items() if name != "popularity"]
            if others:
                best = max(others, key=lambda s: s["ndcg_at_10"])
                measured = f"{best['model']} {best['ndcg_at_10']}"
                checks.append(
                    (f"best lmadapt model NDCG@10 >= {BPR_PUBLISHED}", measured, best["ndcg_at_10"] >= BPR_PUBLISHED)
                )
        elif split == "temporal_loo":
            best_cf = next((s for s in models.values() if s.get("best_cf")), None)
            named = {
                "hybrid": models.get("hybrid"),
                "text": models.get("text"),
                "best CF": best_cf,
                "popularity": models.get("popularity"),
            }
            for metric in ("hr_at_10", "ndcg_at_10"):
                value = {label: None if s is None else s[metric] for label, s in named.items()}
                middle = [v for v in (value["text"], value["best CF"]) if v is not None]
                chain = [value["hybrid"], max(middle) if middle else None, value["popularity"]]
                measured = ", ".join(
                    f"{label} ({s['model']}) {s[metric]}" for label, s in named.items() if s is not None
                )
                checks.append((f"{metric}: hybrid > max(text, best CF) > popularity", measured, _chain_met(chain)))
        elif split == "cold_start" and "text" in models:
            floors = [models[f] for f in FLOORS if f in models]
            if floors:
                floor, text = max(floors, key=lambda s: s["recall_at_10"]), models["text"]["recall_at_10"]
                measured = f"text {text}, best floor {floor['model']} {floor['recall_at_10']}"
                checks.append(("text Recall@10 > every floor", measured, text > floor["recall_at_10"]))
        for target, measured, met in checks:
            found.append(
                {
                    "row": "target",
                    "dataset": dataset,
                    "split": split,
                    "target": target,
                    "measured": measured,
                    "met": met,
                }
            )
    return found


def write_rows(path: Path, rows: list[dict]) -> None:
    """Atomically: an interrupted write leaves the previous file, so a resumed run finds every finished row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    os.replace(partial, path)


def print_tables(summaries: list[dict], targets_found: list[dict]) -> None:
    for dataset, split in sorted({(s["dataset"], s["split"]) for s in summaries}, key=_place_order):
        rows = [s for s in summaries if (s["dataset"], s["split"]) == (dataset, split)]
        print(f"\n### {dataset}, {split}\n")
        print(report.markdown_table(rows))
    for target in targets_found:
        state = "met" if target["met"] else "NOT met"
        print(f"- {target['dataset']} {target['split']}: {target['target']}: {target['measured']} ({state})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "data", help="folder holding movielens_ml_latest_small"
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        choices=list(DATASETS),
        default=list(DATASETS),
        help="run only these (each split runs on those of its datasets listed)",
    )
    parser.add_argument("--splits", nargs="+", choices=list(PLAN), default=list(PLAN))
    parser.add_argument(
        "--models",
        nargs="+",
        help="run only these (each split runs those of its models listed); default: every model of each split",
    )
    parser.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=list(SEEDS),
        help="split and model seeds (random_75_25 runs the first only unless --all-seeds-random)",
    )
    parser.add_argument(
        "--all-seeds-random",
        action="store_true",
        help="run random_75_25 on every seed, not only the first (the published table has one, 42)",
    )
    parser.add_argument(
        "--like-threshold",
        type=float,
        default=4.0,
        help="temporal_loo and cold_start: a rating at least this is a like (random_75_25 keeps every rating)",
    )
    parser.add_argument(
        "--text-max-pairs",
        type=int,
        default=TextConfig.max_pairs,
        help="training pairs of the text model (6000: ~6 min a fit on 2 busy cores; 200 for a quick look)",
    )
    parser.add_argument(
        "--text-epochs", type=float, default=TextConfig.epochs, help="fine-tuning passes of the text model"
    )
    parser.add_argument("--threads", type=int, default=0, help="threads for BPR/ALS (0: one per core)")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch threads for the text models (two threads on two busy cores ran 15x slower than one)",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="the rows: read to skip finished ones, rewritten after each"
    )
    parser.add_argument(
        "--png",
        type=Path,
        default=PNG,
        help="the figure: a panel per dataset and split, NDCG@10 and HR@10 (cold start: Recall@10) per model, "
        "with 95%% intervals",
    )
    parser.add_argument("--force", action="store_true", help="run rows again even where the file has them")
    args = parser.parse_args()
    known = set(COLLABORATIVE + TEXT + FLOORS + HYBRID)
    unknown = sorted(set(args.models or ()) - known)
    if unknown:
        parser.error(f"unknown model(s) {unknown}; known: {sorted(known)}")

    import torch

    torch.set_num_threads(args.torch_threads)
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    seed_rows = [row for row in rows if row.get("row") == "seed"]
    done = {key(row) for row in seed_rows}
    command = "python " + " ".join(sys.argv)
    loaded: dict = {}
    for split_name, spec in PLAN.items():
        if split_name not in args.splits:
            continue
        # The published random_75_25 table is one seed's: the first given unless --all-seeds-random.
        seeds = args.seeds if split_name != "random_75_25" or args.all_seeds_random else args.seeds[:1]
        models = [m for m in spec["models"] if args.models is None or m in args.models]
        for dataset, seed in itertools.product([d for d in spec["datasets"] if d in args.datasets], seeds):
            todo = [m for m in models if args.force or key(_identity(dataset, split_name, m, seed, args)) not in done]
            if not todo:
                continue
            if dataset not in loaded:
                loaded[dataset] = load_recommendation_data(DATASETS[dataset](args.data))
            job = Job(dataset, loaded[dataset], split_name, seed, args)
            for name in todo:
                print(f"== {dataset} {split_name} seed {seed}: {name}", flush=True)
                identity = _identity(dataset, split_name, name, seed, args)
                row = {
                    **identity,
                    **job.run(name),
                    "commit": git_commit(),
                    "command": command,
                    "date": date.today().isoformat(),
                    "cores": os.cpu_count(),
                }
                seed_rows = [r for r in seed_rows if key(r) != key(row)] + [row]
                write_rows(args.out, seed_rows + [r for r in rows if r.get("row") != "seed"])
                figures = ", ".join(f"{m} {row[m]}" for m in ("ndcg_at_10", "hr_at_10", "recall_at_10") if m in row)
                print(f"   {figures}; fit {row.get('fit_seconds')} s", flush=True)
    summaries = summarise(seed_rows)
    found = targets(summaries)
    write_rows(args.out, seed_rows + summaries + found)
    print_tables(summaries, found)
    if summaries:
        panels, metrics = {}, {}
        for s in summaries:
            title = f"{s['dataset']}, {s['split']}"
            panels.setdefault(title, []).append(s)
            metrics[title] = PLOTTED[s["split"]]
        report.plot(panels, args.png, metrics)


def _identity(dataset: str, split_name: str, model: str, seed: int, args) -> dict:
    return {
        "row": "seed",
        "dataset": dataset,
        "split": split_name,
        "model": model,
        "seed": seed,
        "options": options(split_name, model, args),
    }


if __name__ == "__main__":
    main()
