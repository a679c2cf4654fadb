"""Find files that registry packages carry, without importing the packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def find_package_file(module: str, relative_path: str) -> Path | None:
    """`relative_path` inside the installed package `module`, or None when either is missing."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative_path
    return path if path.exists() else None
