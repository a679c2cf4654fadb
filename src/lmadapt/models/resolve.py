"""Resolve a backbone name: local folder, then packaged alias, then the HF cache, then the hub."""

from __future__ import annotations

import os
from pathlib import Path

from lmadapt.errors import LmadaptError
from lmadapt.models.packaged import PACKAGED_MODELS


def _is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file()


def _from_hf_cache(name: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        found = try_to_load_from_cache(name, "config.json")
    except HFValidationError:
        return None  # not a hub id at all, e.g. a path to a folder that does not exist
    return Path(found).parent if isinstance(found, str) else None


def _offline() -> bool:
    return any(
        os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def resolve_backbone(name: str) -> Path:
    """A local HF model folder for `name`. A local hit makes no network call."""
    tried = []
    path = Path(name).expanduser()
    if path.exists():
        if _is_model_folder(path):
            return path
        raise LmadaptError(
            f"'{name}' is a folder but holds no config.json, so it is not a HF model folder",
            fix="point model.backbone at the folder save_pretrained wrote",
        )
    tried.append(f"no folder named '{name}'")
    if name in PACKAGED_MODELS:
        return PACKAGED_MODELS[name].resolve()
    tried.append("not a packaged alias (see `lmadapt models`)")
    cached = _from_hf_cache(name)
    if cached is not None:
        return cached
    tried.append("not in the HF cache")
    if _offline():
        tried.append("hub not asked (HF_HUB_OFFLINE is set)")
    else:
        try:
            from huggingface_hub import snapshot_download

            patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]
            return Path(snapshot_download(name, allow_patterns=patterns))
        except Exception as error:
            tried.append(f"hub download failed ({type(error).__name__})")
    raise LmadaptError(
        f"model '{name}' not found: " + "; ".join(tried),
        where="model.backbone",
        fix="use a packaged alias (" + ", ".join(PACKAGED_MODELS) + "), a local model folder, or a hub id when online",
    )
