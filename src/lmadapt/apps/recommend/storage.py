"""How a fitted recommender's parts are written and read, shared by every model's `save` and `load`: settings and
ids as JSON, the catalogue as JSON lines, arrays as .npy / sparse .npz (nothing is pickled, so loading a folder runs
no code from it), and folders linked rather than copied where the file system allows."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from lmadapt.apps.recommend.base import Catalog
from lmadapt.config import build_dataclass
from lmadapt.errors import LmadaptError

SETTINGS_FILE = "settings.json"
ITEMS_FILE = "items.jsonl"


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise LmadaptError(
            f"{path.name} is missing", where=str(path.parent), fix="pass a folder a recommender's save wrote"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def settings_of(settings: Any) -> dict[str, Any]:
    """A settings dataclass's fields that a recipe can give (not the fitted state a model keeps beside them), a
    nested settings dataclass (e.g. a hybrid's text settings) as a mapping of its own."""
    return {
        f.name: settings_of(value) if dataclasses.is_dataclass(value := getattr(settings, f.name)) else value
        for f in dataclasses.fields(settings)
        if f.init
    }


def nested_settings(cls: type) -> dict[str, type]:
    """The fields of `cls` that are settings dataclasses themselves (their default is one), by name."""
    return {
        f.name: f.default_factory
        for f in dataclasses.fields(cls)
        if f.init and dataclasses.is_dataclass(f.default_factory)
    }


def build_settings(cls: type, raw: Any, where: str) -> Any:
    """The settings dataclass `cls` from a mapping, checked as a recipe's section is (lmadapt.config's
    build_dataclass), a nested settings dataclass built from its own mapping."""
    raw = dict(raw or {}) if isinstance(raw, dict) or raw is None else raw
    nested = nested_settings(cls)
    inner = {name: build_settings(kind, raw.pop(name, None), f"{where}.{name}") for name, kind in nested.items()}
    return dataclasses.replace(build_dataclass(cls, raw, where), **inner) if inner else build_dataclass(cls, raw, where)


def save_settings(settings: Any, folder: Path) -> None:
    write_json(folder / SETTINGS_FILE, settings_of(settings))


def load_settings(cls: type, folder: Path) -> Any:
    """The settings dataclass `cls` as `save_settings` wrote it, checked as a recipe's section is."""
    return build_settings(cls, read_json(folder / SETTINGS_FILE), str(folder / SETTINGS_FILE))


def save_catalog(catalog: Catalog, folder: Path) -> None:
    with open(folder / ITEMS_FILE, "w", encoding="utf-8") as out:
        for item, text in zip(catalog.ids, catalog.texts):
            out.write(json.dumps({"item": item, "text": text}, ensure_ascii=False) + "\n")


def load_catalog(folder: Path) -> Catalog:
    path = folder / ITEMS_FILE
    if not path.is_file():
        raise LmadaptError(
            f"{ITEMS_FILE} is missing", where=str(folder), fix="pass a folder a recommender's save wrote"
        )
    with open(path, encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines if line.strip()]
    return Catalog([row["item"] for row in rows], [row["text"] for row in rows])


def save_array(array: np.ndarray | sp.spmatrix, folder: Path, name: str) -> None:
    """A dense array as <name>.npy, a sparse one as <name>.npz."""
    if sp.issparse(array):
        sp.save_npz(folder / f"{name}.npz", sp.csr_matrix(array))
    else:
        np.save(folder / f"{name}.npy", np.asarray(array), allow_pickle=False)


def load_array(folder: Path, name: str) -> np.ndarray | sp.csr_matrix:
    """What save_array wrote under `name` (scipy's load_npz refuses pickled content too)."""
    sparse = folder / f"{name}.npz"
    if sparse.is_file():
        return sp.load_npz(sparse).tocsr()
    dense = folder / f"{name}.npy"
    if not dense.is_file():
        raise LmadaptError(f"{name}.npy is missing", where=str(folder), fix="pass a folder a recommender's save wrote")
    return np.load(dense, allow_pickle=False)


def link_file(source: str | Path, target: str | Path) -> None:
    """`source` at `target` too: hard-linked where possible (see link_folder), else copied."""
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(source, target)


def link_folder(source: Path, target: Path) -> None:
    """`source`'s files at `target`, hard-linked where possible: a recommender's files are only ever replaced, never
    changed in place, so a link costs no space and no time (a model's encoder is tens of MB)."""
    shutil.copytree(source, target, copy_function=link_file)
