"""What a strategy is handed to build its model, and what it hands back."""

from __future__ import annotations

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
