"""`lmadapt data inspect`: the data's own report (lmadapt.data.inspect) with token lengths and the share of
tokens each backbone's tokenizer does not know."""

from __future__ import annotations

from functools import partial

import numpy as np

from lmadapt.config import DataConfig, ModelConfig
from lmadapt.data.inspect import inspect_source
from lmadapt.models.classifier import load_tokenizer
from lmadapt.models.language import unknown_token_share
from lmadapt.models.resolve import resolve_backbone


def _tokenizer(backbone: str):
    return load_tokenizer(resolve_backbone(backbone), ModelConfig(backbone=backbone))


def _token_lengths(texts: list[str], backbone: str | None, tokenizer) -> tuple[list[int], str]:
    if backbone:
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]], f"{backbone} tokens"
    return [len(t.split()) for t in texts], "words"


def _read_through_backbones(
    texts: list[str], sample: list[str], backbone: str | None, other_backbones: list[str] | tuple, max_length: int
) -> dict:
    tokenizers = {name: _tokenizer(name) for name in dict.fromkeys([backbone, *other_backbones]) if name}
    lengths, unit = _token_lengths(texts, backbone, tokenizers.get(backbone))
    report: dict = {"length_unit": unit}
    report["length_percentiles"] = {f"p{q}": int(np.percentile(lengths, q)) for q in (50, 90, 95, 99)} | {
        "max": int(max(lengths)) if lengths else 0
    }
    report["unknown_share"] = {name: round(unknown_token_share(t, sample), 4) for name, t in tokenizers.items()}
    if backbone:
        report["truncated_share"] = round(float(np.mean([n > max_length for n in lengths])), 4)
        report["max_length"] = max_length
    return report


def inspect_data(
    source: str,
    config: DataConfig,
    backbone: str | None = "minilm",
    against: list[str] | tuple = (),
    max_length: int = 128,
    other_backbones: list[str] | tuple = (),
) -> dict:
    """A report on one data source (and its overlap with others) as a plain dict: `backbone` counts the
    token lengths; it and `other_backbones` each get the share of tokens they do not know."""
    measure = partial(
        _read_through_backbones, backbone=backbone, other_backbones=other_backbones, max_length=max_length
    )
    return inspect_source(source, config, measure, against)
