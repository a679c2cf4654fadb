"""What every adaptation strategy declares (what it is handed and returns: lmadapt.models.contract).

A strategy is its config, `prepare` (build the model to adapt), how its trained model is kept (`artifact`), and
optionally its own training and its own input tokenizer. What else the lifecycle needs to know is derived:
whether a pretrained backbone is read (a default backbone is named), whether the shared Trainer loop trains it
(no own training), whether it trains at all (zero-shot strategies name `no_training`). A strategy that trains
declares what `lmadapt tune` searches (`search_space`). Whether an adapter folds into its backbone is read from the
saved adapter's peft config (lmadapt.models.peft_models.adapter_folds)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmadapt.config import RunConfig
from lmadapt.models.contract import PreparedModel, StrategyContext
from lmadapt.models.resolve import resolve_backbone
from lmadapt.models.saved import WHOLE_MODEL, SavedModel
from lmadapt.strategies.space import SearchSpace


def no_training(prepared: PreparedModel, data, run_config: RunConfig) -> dict:
    """The own training of strategies that build their classifier in prepare (zero-shot): there is none."""
    return {"runtime_s": 0.0, "trained": False}


@dataclass(frozen=True)
class Strategy:
    """One registry entry: a way of adapting a model."""

    name: str
    summary: str
    config_class: type
    default_learning_rate: float  # on two classes, where a rule for many is declared below
    prepare: Callable[[StrategyContext, Any], PreparedModel]
    default_warmup_ratio: float = 0.1
    # Measured rates over many classes (lmadapt.training.defaults.MANY_CLASSES and more); between two classes and
    # many, a derived default follows log(classes). None: the default rate whatever the classes.
    learning_rate_many_classes: float | None = None
    head_learning_rate_many_classes: float | None = None  # the new head's own rate; None: the rest's rate
    # Epochs when the config leaves them empty and the strategy trains on its own (the shared Trainer loop's are
    # derived from the rows).
    default_epochs: float = 3.0
    # When the config leaves model.backbone empty; None: the strategy reads no pretrained backbone (scratch).
    default_backbone: str | None = "minilm"
    artifact: SavedModel = WHOLE_MODEL  # how model/ keeps what it trained (see lmadapt.models.saved)
    # Training other than the shared Trainer loop: (prepared, data, run config) -> training figures.
    own_training: Callable[[PreparedModel, Any, RunConfig], dict] | None = None
    # The tokenizer the model reads through, from the backbone's (e.g. one that writes texts into a prompt):
    # (tokenizer, strategy config, the saved run's model/ folder or None while training) -> tokenizer.
    input_tokenizer: Callable[[Any, Any, Path | None], Any] | None = None
    # What `lmadapt tune` searches: dotted config key -> range or choices (lmadapt.strategies.space); None: the
    # strategy has nothing to tune (it does not train).
    search_space: SearchSpace | None = field(default=None, hash=False, compare=False)

    @property
    def uses_backbone(self) -> bool:
        return self.default_backbone is not None

    @property
    def uses_trainer(self) -> bool:
        return self.own_training is None

    @property
    def trains(self) -> bool:
        return self.own_training is not no_training

    def backbone_path(self, config: RunConfig) -> Path | None:
        """The configured backbone's local folder; None for a strategy that reads no pretrained backbone."""
        return resolve_backbone(config.model.backbone) if self.uses_backbone else None
