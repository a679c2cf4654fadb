"""What every adaptation strategy declares (what it is handed and returns: lmadapt.models.contract)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmadapt.models.contract import PreparedModel, StrategyContext
from lmadapt.models.saved import WHOLE_MODEL, SavedModel


@dataclass(frozen=True)
class Strategy:
    """One registry entry: a way of adapting a model."""

    name: str
    summary: str
    config_class: type
    default_learning_rate: float
    prepare: Callable[[StrategyContext, Any], PreparedModel]
    default_warmup_ratio: float = 0.1
    uses_backbone: bool = True
    bf16_ok: bool = True
    artifact: SavedModel = WHOLE_MODEL  # how model/ keeps what it trained (see lmadapt.models.saved)
    mergeable: bool = False  # `lmadapt merge` can fold the adapter into the backbone
    trains: bool = True  # zero-shot strategies build their classifier without training
    # A strategy that trains its own way (not with the Trainer): (prepared, data, run config) -> training figures.
    own_training: Callable[[PreparedModel, Any, Any], dict] | None = None
    default_backbone: str = "minilm"  # when the config leaves model.backbone empty
    # The tokenizer the model reads through, from the backbone's (e.g. one that writes texts into a prompt):
    # (tokenizer, strategy config, the saved run's model/ folder or None while training) -> tokenizer.
    input_tokenizer: Callable[[Any, Any, Path | None], Any] | None = None
