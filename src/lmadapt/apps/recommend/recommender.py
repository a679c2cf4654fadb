"""The recommender folder: what `lmadapt recommend train` writes and everything after it reads.

recommenders/<name>/
  config.yaml          the resolved recipe (the chosen model's section only)
  recommender.json     the model's name, the data's counts, when, items added since
  metrics.json         the evaluation on the recipe's split (when evaluation.at_train)
  interactions.csv     the interactions the model learnt from (user, item, weight, time, rating)
  model/               the fitted model as its `save` wrote it: settings, catalogue (items.jsonl), state
  manifest.json        every file with sha256 and size; library versions

`train` measures the model on the recipe's split first (fitted on the split's train and validation parts, scored on
its test part), then fits it on all the interactions: the folder serves the model that learnt from everything, and
its metrics.json says how well the same recipe does on data it has not seen. The folder is written as a run folder
is (a staging folder renamed into place, never over an existing one unless asked) and verified on load. Adding items
writes a new folder the same way, so an interruption leaves the old one whole.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from lmadapt.apps.recommend.base import Catalog
from lmadapt.apps.recommend.config import MODEL_KINDS, DataSection, RecommendConfig
from lmadapt.apps.recommend.data import (
    RecommendationData,
    implicit_feedback,
    item_text,
    items_from_table,
    load_recommendation_data,
    read_recommendation_data,
)
from lmadapt.apps.recommend.metrics import evaluate
from lmadapt.apps.recommend.splits import split_interactions
from lmadapt.apps.recommend.storage import link_file, read_json, write_json
from lmadapt.data.loading import read_table
from lmadapt.errors import LmadaptError
from lmadapt.runs import check_output_path, verify_manifest, write_run_folder, write_text_atomic
from lmadapt.version import __version__

RECORD_FILE = "recommender.json"
METRICS_FILE = "metrics.json"
INTERACTIONS_FILE = "interactions.csv"
MODEL_FOLDER = "model"
CONFIG_FILE = "config.yaml"


class UnknownUser(LmadaptError):
    """A user id the recommender has no interactions of."""


def load_data(data: DataSection) -> RecommendationData:
    """The recipe's interactions and item texts: a built-in source or MovieLens folder, else files."""
    source = data.interactions
    if source.startswith("builtin:") or Path(source).is_dir():
        return load_recommendation_data(source)
    return read_recommendation_data(
        source,
        data.items,
        data.tags,
        user_column=data.user_column,
        item_column=data.item_column,
        rating_column=data.rating_column,
        time_column=data.time_column,
        text_columns=data.text_columns or ("title",),
        list_separators=data.list_separators,
        tag_column=data.tag_column,
        fmt=data.format,
    )


def liked(config: RecommendConfig, data: RecommendationData) -> pd.DataFrame:
    """The interactions that count (rating at or above the threshold), each weighing 1."""
    interactions = implicit_feedback(data.interactions, config.data.implicit_threshold)
    if interactions.empty:
        raise LmadaptError(
            f"no interaction has a rating of at least {config.data.implicit_threshold}",
            where="data.implicit_threshold",
            fix="lower the threshold, or leave it empty so that every interaction counts",
        )
    return interactions


def recipe_catalog(config: RecommendConfig, data: RecommendationData, **hidden) -> Catalog:
    """The items and their texts (see RecommendationData.catalog for `hidden`), an item without text read as
    data.untitled_text."""
    catalog = data.catalog(**hidden)
    untitled = config.data.untitled_text
    return catalog if not untitled else Catalog(catalog.ids, [text or untitled for text in catalog.texts])


def evaluate_recipe(
    config: RecommendConfig, data: RecommendationData | None = None, progress=print, per_user: bool = False
) -> dict:
    """The recipe's model fitted on its split's train and validation parts and measured on the test part (full
    ranking, what it learnt from excluded; a cold-start split ranks the held-out items only). Item texts leave out
    the tags of held-out pairs and items. `per_user`: the metrics keep each user's values (a DataFrame under
    metrics['per_user']) for a bootstrap interval."""
    data = data if data is not None else load_data(config.data)
    evaluation = config.evaluation
    options = {"cold_share": evaluation.cold_share} if evaluation.split == "cold_start" else {}
    split = split_interactions(liked(config, data), evaluation.split, evaluation.seed, **options)
    hidden = pd.concat([split.validation, split.test], ignore_index=True)
    catalog = recipe_catalog(config, data, hidden_pairs=hidden, hidden_items=split.cold_items)
    seen = split.train_and_validation()
    progress(f"evaluating {config.model} on the {evaluation.split} split ({len(seen)} interactions to learn from)")
    started = time.perf_counter()
    model = config.make_model().fit(seen, catalog)
    fitted = time.perf_counter()
    metrics = evaluate(
        model, split.test, seen, catalog, evaluation.cutoffs, candidates=split.cold_items or None, per_user=per_user
    )
    return {
        "model": config.model,
        "data": data.source,
        "split": split.record,
        "ks": list(evaluation.cutoffs),
        "metrics": metrics,
        "fit_seconds": round(fitted - started, 3),
        "evaluate_seconds": round(time.perf_counter() - fitted, 3),
    }


def compare_recipes(
    configs: Sequence[RecommendConfig], seeds: Sequence[int] = (), progress=print
) -> dict[str, list[dict]]:
    """Each recipe evaluated (evaluate_recipe) on each seed's split (no seeds: the recipe's own), the data read once
    per source: {recipe name: [its reports, one per seed]}. With one seed the metrics keep their per-user values,
    so that report.write_report can give a bootstrap interval."""
    names = [config.name for config in configs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise LmadaptError(
            f"two recipes are named '{repeated[0]}': the report could not tell their rows apart",
            where="name",
            fix=f"give each its own name, e.g. --set name={repeated[0]}-2 on one (or edit its YAML)",
        )
    loaded: dict[str, RecommendationData] = {}
    found: dict[str, list[dict]] = {}
    for config in configs:
        key = json.dumps(dataclasses.asdict(config.data), sort_keys=True, default=str)
        if key not in loaded:
            loaded[key] = load_data(config.data)
        for seed in seeds or [config.evaluation.seed]:
            seeded = copy.copy(config)  # not dataclasses.replace: the model's settings are not an init field
            seeded.evaluation = dataclasses.replace(config.evaluation, seed=seed)
            report = evaluate_recipe(seeded, loaded[key], progress, per_user=len(seeds) <= 1)
            found.setdefault(config.name, []).append(report)
    return found


def train_recommender(
    config: RecommendConfig, output: str | Path | None = None, *, overwrite: bool = False, progress=print
) -> Path:
    """Measure the recipe on its split (when evaluation.at_train), fit its model on all the interactions and write
    the recommender folder (see the module); returns its path."""
    final = Path(output) if output is not None else config.folder
    if final.exists() and not overwrite:
        raise LmadaptError(
            f"recommender folder already exists: {final}", fix="choose another --output or name, or pass --overwrite"
        )
    check_output_path(final, folder=True, example=config.name)
    model = config.make_model()
    if hasattr(model, "check_saveable"):
        model.check_saveable()  # before minutes of fitting, not after
    data = load_data(config.data)
    report = evaluate_recipe(config, data, progress) if config.evaluation.at_train else None
    interactions = liked(config, data)
    catalog = recipe_catalog(config, data)
    progress(f"fitting {config.model} on {len(interactions)} interactions of {len(catalog)} items")
    started = time.perf_counter()
    model.fit(interactions, catalog)
    record = {
        "model": config.model,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "lmadapt": __version__,
        "data": data.describe(),
        "users": int(interactions["user"].nunique()),
        "items": len(catalog),
        "interactions": len(interactions),
        "fit_seconds": round(time.perf_counter() - started, 3),
        "added_items": 0,
    }

    def fill(staging: Path) -> None:
        (staging / CONFIG_FILE).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
        write_json(staging / RECORD_FILE, record)
        if report is not None:
            write_json(staging / METRICS_FILE, report)
        interactions[["user", "item", "weight", "time", "rating"]].to_csv(staging / INTERACTIONS_FILE, index=False)
        model.save(staging / MODEL_FOLDER)

    write_run_folder(final, fill, overwrite)
    return final


class SavedRecommender:
    """A recommender folder, loaded: its model (as saved: nothing is refitted or re-encoded), the users it knows and
    the answers the command line and the service give."""

    def __init__(self, path: Path):
        self.path = path
        self.record: dict[str, Any] = read_json(path / RECORD_FILE)
        self.config: dict[str, Any] = yaml.safe_load((path / CONFIG_FILE).read_text(encoding="utf-8"))
        metrics = path / METRICS_FILE
        self.metrics: dict[str, Any] | None = read_json(metrics) if metrics.is_file() else None
        interactions = pd.read_csv(path / INTERACTIONS_FILE, dtype={"user": str, "item": str})
        self.users = set(interactions["user"])
        self.model = MODEL_KINDS[self.record["model"]].load(path / MODEL_FOLDER)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def catalog(self) -> Catalog:
        return self.model.catalog

    def answer(self, found: list[tuple[str, float]]) -> list[dict]:
        """(item, score) pairs as rows with each item's text."""
        catalog = self.catalog
        return [{"item": item, "score": score, "text": catalog.texts[catalog.index[item]]} for item, score in found]

    def recommend(self, user: str, k: int = 10) -> list[dict]:
        """The user's top k, what they interacted with left out; a user without interactions is an UnknownUser."""
        _check_k(k)
        if user not in self.users:
            raise UnknownUser(
                f"user '{user}' has no interactions in the data this recommender learnt from",
                where=str(self.path),
                fix="check the id, or recommend from items they liked (POST /v1/recommend with items) or, with a text "
                "model, a description of what they like (--text, or POST /v1/recommend with text)",
            )
        return self.answer(self.model.recommend(user, k))

    def for_history(self, items: Sequence[str] = (), text: str | None = None, k: int = 10) -> list[dict]:
        """Top k for a visitor: from the items they liked (oldest first) or, with a text model, a description of
        what they like, or both; the given items left out. An unknown item id is an error naming it, and so is what
        the model cannot read (a description for a collaborative model, any history for BPR and ALS)."""
        _check_k(k)
        return self.answer(self.model.recommend_for_history(list(items), text, k))

    def similar(self, item: str, k: int = 10) -> list[dict]:
        """The k items nearest to `item` (the top k of a one-item history), the item itself left out."""
        return self.for_history([item], k=k)


def _check_k(k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise LmadaptError(f"k must be a whole number >= 1, got {k!r}", where="k", fix="e.g. k=10")


def open_recommender(folder: str | Path) -> SavedRecommender:
    """A recommender folder, its manifest verified."""
    folder = Path(folder)
    if not (folder / RECORD_FILE).is_file():
        raise LmadaptError(
            f"not a recommender folder (no {RECORD_FILE})",
            where=str(folder),
            fix="pass a folder that `lmadapt recommend train` wrote",
        )
    verify_manifest(folder)
    return SavedRecommender(folder)


def load_recommender(folder: str | Path):
    """The fitted model of a recommender folder, ready to score and recommend (nothing refitted or re-encoded)."""
    return open_recommender(folder).model


def read_new_items(
    source: str | Path, id_column: str = "id", text_columns: Sequence[str] = ("text",), fmt: str = "auto"
) -> tuple[list[str], list[str]]:
    """Item ids and texts from a CSV/TSV/JSONL/Parquet file: the first text column as it is (the title), the others
    as 'Column: value' (as the catalogue's texts are made)."""
    items = items_from_table(read_table(source, fmt), item_column=id_column, text_columns=list(text_columns))
    texts = [item_text(row, text_columns, {}) for row in items.to_dict("records")]
    return items["item"].tolist(), texts


def add_items(folder: str | Path, ids: Sequence[str], texts: Sequence[str]) -> SavedRecommender:
    """Items known by their text alone, recommendable at once (no retraining): the folder's model encodes them and
    a new folder replaces the old one in one rename (an interruption leaves the old one whole). Returns the new
    folder, loaded. A model that reads no text refuses, before anything is written."""
    saved = open_recommender(folder)
    model = saved.model
    if not hasattr(model, "add_items"):
        raise LmadaptError(
            f"the {model.name} model cannot take new items: it knows items by their interactions only, and a new item "
            "has none",
            where=str(saved.path),
            fix="train a recommender with model=text (it reads items by their text), then add the items to it",
        )
    model.add_items(list(ids), list(texts))
    record = saved.record | {"added_items": saved.record["added_items"] + len(ids)}

    def fill(staging: Path) -> None:
        for name in (CONFIG_FILE, METRICS_FILE, INTERACTIONS_FILE):
            if (saved.path / name).is_file():
                link_file(saved.path / name, staging / name)
        write_json(staging / RECORD_FILE, record)
        model.save(staging / MODEL_FOLDER)

    write_run_folder(saved.path, fill, overwrite=True)
    return open_recommender(saved.path)


def metrics_rows(report: dict) -> list[tuple[str, dict[str, float]]]:
    """The metrics of an evaluation report by cut-off: [(k, {ndcg, recall, precision, map, hr, coverage})]."""
    metrics = report["metrics"]
    names = ("ndcg", "recall", "precision", "map", "hr", "coverage")
    return [(str(k), {name: metrics[f"{name}_at_{k}"] for name in names}) for k in report["ks"]]


def write_report(report: dict, path: Path) -> None:
    """The report as JSON, written whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(report, indent=2, default=str) + "\n")
