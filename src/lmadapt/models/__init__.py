"""Backbones: resolution by path, packaged alias or hub id, and the classification models built on them."""

from lmadapt.models.packaged import PACKAGED_MODELS, PackagedModel
from lmadapt.models.resolve import resolve_backbone

__all__ = ["PACKAGED_MODELS", "PackagedModel", "resolve_backbone"]
