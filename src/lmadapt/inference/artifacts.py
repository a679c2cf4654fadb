"""A run's model/ folder, written and read back for every strategy: the kind of folder is the strategy's
(Strategy.artifact, one of lmadapt.models.saved); here the folder is filled, the backbone found, the model rebuilt on
a shared copy of the backbone where asked, and a damaged weights file named."""

from __future__ import annotations

from pathlib import Path

from lmadapt.config import RunConfig
from lmadapt.data.labels import LabelMap
from lmadapt.errors import LmadaptError
from lmadapt.models.contract import StrategyContext
from lmadapt.models.saved import backbone_of, save_backbone_record
from lmadapt.strategies import Strategy, get_strategy


def save_model(model, tokenizer, folder: Path, strategy: Strategy, backbone: str | None, backbone_path: Path | None):
    """Write the trained model into a run's model/ folder, as the strategy's kind of folder keeps it."""
    folder.mkdir(parents=True, exist_ok=True)
    strategy.artifact.save(model, tokenizer, folder)
    if strategy.artifact.needs_backbone:
        save_backbone_record(folder, backbone, backbone_path)


def load_model(
    folder: Path, config: RunConfig, labels: LabelMap, *, share_backbone: bool = False, trainable: bool = False
):
    """The trained classifier a run folder holds, in eval mode.

    With `share_backbone`, runs on the same backbone reuse one copy of its frozen weights in memory;
    with `trainable`, what the strategy trained trains on (a peft adapter is loaded trainable).
    """
    return load_model_and_reader(folder, config, labels, share_backbone=share_backbone, trainable=trainable)[0]


def load_model_and_reader(
    folder: Path, config: RunConfig, labels: LabelMap, *, share_backbone: bool = False, trainable: bool = False
):
    """(model, reader): the classifier as `load_model` gives it, and the input tokenizer the strategy built
    beside it when it rebuilt the model (prompt strategies: one that writes the prompt), else None.

    Building both at once matters where the reader is costly (similar-demonstration selection loads a
    sentence encoder and embeds the whole pool). A weights file of the run that cannot be read is an error
    naming it (the manifest cannot tell a damaged file from the original when it was signed after the damage).
    """
    from safetensors import SafetensorError

    try:
        return _rebuild(folder, config, labels, share_backbone=share_backbone, trainable=trainable)
    except SafetensorError:
        unreadable = _unreadable_weights(folder)
        if unreadable is None:
            raise  # not the run's own weights (its backbone's, say)
        file, reason = unreadable
        raise LmadaptError(
            f"the run's model weights cannot be read, the file is damaged or cut short ({reason})",
            where=str(file),
            fix=f"restore the run folder {folder.parent} from a copy, or retrain it",
        ) from None


def _unreadable_weights(folder: Path) -> tuple[Path, str] | None:
    """The first of the weights files in a run's model folder that safetensors cannot open, and why."""
    from safetensors import SafetensorError, safe_open

    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except SafetensorError as error:
            return file, str(error)
    return None


def _rebuild(folder: Path, config: RunConfig, labels: LabelMap, *, share_backbone: bool, trainable: bool):
    strategy = get_strategy(config.strategy_name)
    context = None
    if strategy.artifact.needs_backbone:
        context = StrategyContext(
            backbone_of(folder), config.model, labels, [], share_backbone=share_backbone, saved_folder=folder
        )
    model, prepared = strategy.artifact.load(
        folder, config, context, lambda built_in: strategy.prepare(built_in, config.strategy), trainable
    )
    return model, prepared.tokenizer if prepared is not None and strategy.input_tokenizer else None


def load_saved_tokenizer(folder: Path, config: RunConfig):
    """The tokenizer saved beside the model, as the backbone gave it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, trust_remote_code=config.model.trust_remote_code)


def load_input_tokenizer(folder: Path, config: RunConfig):
    """The tokenizer the model reads through (for prompt strategies: one that writes the prompt first)."""
    tokenizer = load_saved_tokenizer(folder, config)
    wrap = get_strategy(config.strategy_name).input_tokenizer
    return wrap(tokenizer, config.strategy, folder) if wrap else tokenizer
