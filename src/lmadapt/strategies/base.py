"""What every adaptation strategy declares, and what it is handed to prepare a model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmadapt.config import ModelConfig
from lmadapt.data.labels import LabelMap


@dataclass
class StrategyContext:
    """Everything a strategy may use to build the model it will train."""

    backbone_path: Path | None
    model: ModelConfig
    labels: LabelMap
    train_texts: list[str]
    share_backbone: bool = False  # inference: reuse one in-memory copy of the backbone's frozen weights
    train_labels: list | None = None  # the training rows' labels, for strategies that use examples as such
    saved_folder: Path | None = None  # when a saved run is rebuilt: its model/ folder (with PreparedModel.files)


@dataclass
class PreparedModel:
    """A model ready for the trainer, with the tokenizer that feeds it."""

    model: Any
    tokenizer: Any
    files: dict[str, str] = field(default_factory=dict)  # extra text files for the run's model/ folder


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
    artifact: str = "model"  # what model/ holds: model, peft or delta (see lmadapt.inference.artifacts)
    mergeable: bool = False  # `lmadapt merge` can fold the adapter into the backbone
    trains: bool = True  # zero-shot strategies build their classifier without training
    # A strategy that trains its own way (not with the Trainer): (prepared, data, run config) -> training figures.
    own_training: Callable[[PreparedModel, Any, Any], dict] | None = None
    default_backbone: str = "minilm"  # when the config leaves model.backbone empty
    # The tokenizer the model reads through, from the backbone's (e.g. one that writes texts into a prompt):
    # (tokenizer, strategy config, the saved run's model/ folder or None while training) -> tokenizer.
    input_tokenizer: Callable[[Any, Any, Path | None], Any] | None = None
