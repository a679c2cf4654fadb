"""A recommender's recipe: the data, the model and its settings, the evaluation split, as dataclasses whose every
field has help (`lmadapt recommend keys` lists them).

The model is named by `model`; its settings are the section of the same name (ease: {l2: 400}, text: {...}). Every
model is one entry of MODEL_KINDS: the dataclass of its settings, how to make it, how to load a saved one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmadapt.apps.recommend.base import Recommender
from lmadapt.apps.recommend.data import DEFAULT_IMPLICIT_THRESHOLD
from lmadapt.apps.recommend.hybrid import HybridConfig, HybridRecommender
from lmadapt.apps.recommend.metrics import KS
from lmadapt.apps.recommend.models import MODELS
from lmadapt.apps.recommend.splits import DEFAULT_SEED, SPLITS
from lmadapt.apps.recommend.storage import build_settings, nested_settings, settings_of
from lmadapt.apps.recommend.text import TextConfig, TextRecommender
from lmadapt.config import ConfigKey, apply_overrides, build_dataclass, option, read_recipe, section_keys
from lmadapt.errors import LmadaptError, did_you_mean


@dataclass(frozen=True)
class ModelKind:
    """What the recipe and the recommender folder need to know of a model."""

    settings: type  # the dataclass of its settings: the recipe's section named after the model
    make: Callable[[Any], Recommender]  # its settings -> an unfitted model
    load: Callable[[Path], Recommender]  # a folder its save wrote -> the fitted model


def _collaborative(model: type) -> ModelKind:
    """A collaborative model is the dataclass of its own settings: a fresh copy of them is an unfitted model."""
    return ModelKind(model, dataclasses.replace, model.load)


MODEL_KINDS: dict[str, ModelKind] = {
    **{name: _collaborative(model) for name, model in MODELS.items()},
    "text": ModelKind(TextConfig, TextRecommender, TextRecommender.load),
    "hybrid": ModelKind(HybridConfig, HybridRecommender, HybridRecommender.load),
}


@dataclass
class DataSection:
    interactions: str = option(
        "builtin:ml-100k",
        "Who did what: builtin:ml-100k (MovieLens 100K, from the recbole package), a MovieLens folder (ratings.csv, "
        "movies.csv, tags.csv), or a CSV/TSV/JSONL/Parquet file whose columns are named below.",
    )
    items: str | None = option(
        None,
        "For a file of interactions: a file of the items (item_column and text_columns); empty: items known by id "
        "only (a text model needs their text). A built-in source or MovieLens folder brings its own.",
    )
    tags: str | None = option(
        None, "For a file of interactions: a file of user tags (user, item, tag_column, time) added to item texts."
    )
    format: str = option("auto", "Format of those files: auto (from the extension), csv, tsv, jsonl, parquet.")
    user_column: str = option("user", "Column of the user id (interactions and tags files).")
    item_column: str = option("item", "Column of the item id (every file).")
    rating_column: str | None = option(
        "rating", "Column of the rating; empty: no ratings, every interaction is a like (clicks, purchases)."
    )
    time_column: str | None = option("timestamp", "Column of the time (seconds since 1970 or ISO 8601); empty: none.")
    text_columns: list[str] | None = option(
        None, "The items file's columns that make an item's text, the title first; empty: title."
    )
    list_separators: dict[str, str] | None = option(
        None, "Text columns that list values, and their separator, e.g. {genres: '|'}."
    )
    tag_column: str = option("tag", "Column of the tag in the tags file.")
    untitled_text: str | None = option(
        "Untitled.",
        "The text of an item that has none (ml-100k's item 267 is titled 'unknown'), so that a text model ranks every "
        "item as the others do; empty: such an item is an error for a text model.",
    )
    implicit_threshold: float | None = option(
        DEFAULT_IMPLICIT_THRESHOLD,
        "An interaction counts (is learnt from, and left out of that user's recommendations) when its rating is at "
        "least this; rows without a rating always count. Empty: every interaction counts (the protocol of the "
        "recommenders project's MovieLens table).",
    )


@dataclass
class EvaluationSection:
    split: str = option(
        "random_75_25",
        "How the interactions are split to measure the model: random_75_25 (per user, a seeded 75% to learn from, "
        "the rest to find), temporal_loo (each user's last interaction to find), cold_start (a seeded share of the "
        "items held out with all their interactions: only a text model can recommend them).",
    )
    seed: int = option(DEFAULT_SEED, "Seed of the split.")
    ks: list[int] | None = option(None, "Cut-offs of the metrics; empty: " + ", ".join(map(str, KS)) + ".")
    cold_share: float = option(0.15, "cold_start: share of the items held out.")
    at_train: bool = option(
        True,
        "`recommend train` first fits the model on the split and measures it (metrics.json in the folder), then "
        "fits it again on all the data for serving: twice the training time. false: fit once, no metrics.",
    )

    @property
    def cutoffs(self) -> tuple[int, ...]:
        return tuple(self.ks or KS)


@dataclass
class RecommendConfig:
    name: str = option("recommender", "The recommender's name: its folder is <output_dir>/<name>.")
    output_dir: str = option("recommenders", "Folder of recommender folders.")
    model: str = option(
        "ease",
        "The model: " + ", ".join(MODEL_KINDS) + ". Its settings are the section of the same name (e.g. ease.l2).",
    )
    data: DataSection = field(default_factory=DataSection)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    settings: Any = field(default=None, init=False, repr=False)  # the chosen model's settings section

    @property
    def folder(self) -> Path:
        return Path(self.output_dir) / self.name

    def make_model(self) -> Recommender:
        """A new, unfitted model of these settings."""
        return MODEL_KINDS[self.model].make(self.settings)

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe (the chosen model's section only), as config.yaml keeps it."""
        raw = settings_of(self)
        raw["data"], raw["evaluation"] = settings_of(self.data), settings_of(self.evaluation)
        raw[self.model] = settings_of(self.settings)
        return raw


SECTIONS = {"data": DataSection, "evaluation": EvaluationSection}


def parse_recommend_config(raw: dict) -> RecommendConfig:
    """A checked RecommendConfig from a mapping (a recipe with overrides applied)."""
    if not isinstance(raw, dict):
        raise LmadaptError("a recommender config must be a mapping of keys and sections (data, model, evaluation)")
    raw = dict(raw)
    top = [f.name for f in dataclasses.fields(RecommendConfig) if f.init] + list(MODEL_KINDS)
    for key in raw:
        if key not in top:
            raise LmadaptError(f"unknown config key '{key}'", where=str(key), fix=did_you_mean(str(key), top))
    models = {name: build_settings(kind.settings, raw.pop(name, None), name) for name, kind in MODEL_KINDS.items()}
    sections = {name: build_dataclass(cls, raw.pop(name, None), name) for name, cls in SECTIONS.items()}
    config = dataclasses.replace(build_dataclass(RecommendConfig, raw, ""), **sections)
    if config.model not in MODEL_KINDS:
        raise LmadaptError(
            f"unknown model '{config.model}'", where="model", fix=did_you_mean(config.model, list(MODEL_KINDS))
        )
    config.settings = models[config.model]
    check_recommend_config(config)
    return config


def load_recommend_config(path: str | Path | None, overrides: list[str] | None = None) -> RecommendConfig:
    """Read a recommender recipe (YAML) with `section.key=value` overrides; an error names the file."""
    raw = read_recipe(Path(path))[0] if path is not None else {}
    try:
        return parse_recommend_config(apply_overrides(raw or {}, overrides or []))
    except LmadaptError as error:
        if path is not None and (error.where is None or not error.where.startswith(str(path))):
            error.where = f"{path}: {error.where}" if error.where else str(path)
            error.args = (error.render(),)
        raise


def recommend_keys(prefix: str | None = None) -> list[ConfigKey]:
    """Every recommender config key (dotted) with its type, default and help."""
    keys = section_keys(RecommendConfig, "", skip=(*SECTIONS, "settings"))
    for name, cls in SECTIONS.items():
        keys += section_keys(cls, f"{name}.")
    for name, kind in MODEL_KINDS.items():
        keys += settings_keys(kind.settings, f"{name}.")
    if prefix:
        keys = [key for key in keys if key.key == prefix or key.key.startswith(prefix.rstrip(".") + ".")]
    return keys


def settings_keys(cls: type, prefix: str) -> list[ConfigKey]:
    """The keys of a model's settings: not the fields fit fills in, a nested settings dataclass's keys under its name
    (hybrid.text.epochs), a default made by a factory shown as made."""
    nested = nested_settings(cls)
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    fitted = tuple(name for name, f in by_name.items() if not f.init)
    keys = []
    for key in section_keys(cls, prefix, skip=(*nested, *fitted)):
        factory = by_name[key.key.removeprefix(prefix)].default_factory
        keys.append(key if factory is dataclasses.MISSING else dataclasses.replace(key, default=factory()))
    for name, kind in nested.items():
        keys += settings_keys(kind, f"{prefix}{name}.")
    return keys


def check_recommend_config(config: RecommendConfig) -> None:
    """Refuse settings that cannot work, naming the key; the model's own settings are checked as it is made."""
    evaluation = config.evaluation
    if evaluation.split not in SPLITS:
        raise LmadaptError(
            f"unknown split '{evaluation.split}'", where="evaluation.split", fix=did_you_mean(evaluation.split, SPLITS)
        )
    if any(k < 1 for k in evaluation.cutoffs):
        raise LmadaptError(
            f"cut-offs must be whole numbers >= 1, got {evaluation.ks}", where="evaluation.ks", fix="e.g. [5, 10, 20]"
        )
    if not 0 < evaluation.cold_share < 1:
        raise LmadaptError(
            f"evaluation.cold_share must lie between 0 and 1, got {evaluation.cold_share}",
            where="evaluation.cold_share",
            fix="e.g. 0.15",
        )
    if not config.name.strip() or Path(config.name).name != config.name:
        raise LmadaptError(
            f"name '{config.name}' is not a folder name", where="name", fix="a plain name, e.g. ml100k-ease"
        )
    source = config.data.interactions
    if (source.startswith("builtin:") or Path(source).is_dir()) and (config.data.items or config.data.tags):
        raise LmadaptError(
            "data.items and data.tags are for a file of interactions; a built-in source or MovieLens folder brings "
            "its own",
            where="data.items" if config.data.items else "data.tags",
            fix="leave them empty, or point data.interactions at a file",
        )
    config.make_model()  # the model checks its own settings as it is made (e.g. text.index)
