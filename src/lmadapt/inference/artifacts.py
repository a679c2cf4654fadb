"""What a run's model/ folder holds, for every strategy, and how it becomes a model again.

- `model`: a complete HF model (full, scratch): `AutoModelForSequenceClassification` loads it.
- `peft`: a peft adapter folder, head included (lora, ia3, prefix, prompt_tuning):
  `PeftModel.from_pretrained(backbone_classifier, model/)` loads it.
- `delta`: only the tensors training changed (adapter, bitfit, head), in delta.safetensors; the
  model is rebuilt by the strategy from the backbone and the run's config, then the delta is laid on.

Adapter and delta folders also hold lmadapt_backbone.json (the backbone as configured and the
folder it resolved to), and the tokenizer, so a run reloads without its training data.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

import lmadapt.models.lstm  # noqa: F401  registers lmadapt's own model types with the Auto classes
import lmadapt.models.pooled  # noqa: F401
from lmadapt.config import RunConfig
from lmadapt.data.labels import LabelMap
from lmadapt.errors import LmadaptError
from lmadapt.models.contract import StrategyContext
from lmadapt.models.peft_models import load_peft_adapter, peft_base_classifier
from lmadapt.models.resolve import resolve_backbone
from lmadapt.strategies import get_strategy

MODEL, PEFT, DELTA = "model", "peft", "delta"
DELTA_WEIGHTS = "delta.safetensors"
BACKBONE_RECORD = "lmadapt_backbone.json"


def trained_tensors(model) -> dict[str, torch.Tensor]:
    """The parameters training changed: every one that requires a gradient."""
    return {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if p.requires_grad}


def save_model(model, tokenizer, folder: Path, artifact: str, backbone: str | None, backbone_path: Path | None) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    if artifact in (MODEL, PEFT):
        model.save_pretrained(folder)  # peft models write only the adapter and the head
    else:
        save_file(trained_tensors(model), str(folder / DELTA_WEIGHTS))
    if artifact != MODEL:
        record = {"backbone": backbone, "path": str(Path(backbone_path).resolve()) if backbone_path else None}
        (folder / BACKBONE_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tokenizer.save_pretrained(folder)


def backbone_of(folder: Path) -> Path:
    """The backbone an adapter or delta run needs: as configured, else the folder it resolved to at training."""
    record = json.loads((folder / BACKBONE_RECORD).read_text(encoding="utf-8"))
    try:
        return resolve_backbone(record["backbone"])
    except LmadaptError as error:
        recorded = Path(record["path"]) if record.get("path") else None
        if recorded is not None and (recorded / "config.json").is_file():
            return recorded
        raise LmadaptError(
            f"this run adapts the backbone '{record['backbone']}', which is not available here: {error.what}",
            where=str(folder),
            fix="install or download that backbone (the run folder holds only the adapter and the head)",
        ) from None


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
    from transformers import AutoModelForSequenceClassification

    strategy = get_strategy(config.strategy_name)
    if strategy.artifact == MODEL:
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, trust_remote_code=config.model.trust_remote_code
        )
        return model.eval(), None
    context = StrategyContext(
        backbone_of(folder), config.model, labels, [], share_backbone=share_backbone, saved_folder=folder
    )
    if strategy.artifact == PEFT:
        base, _ = peft_base_classifier(context, config.strategy)
        return load_peft_adapter(base, folder, trainable).eval(), None
    from safetensors.torch import load_file

    prepared = strategy.prepare(context, config.strategy)
    model = prepared.model
    # Onto the device the strategy built the model on (a sentence encoder takes the GPU where there is one).
    delta = load_file(str(folder / DELTA_WEIGHTS), device=str(next(model.parameters()).device))
    # assign=True puts the run's own tensors in place instead of copying into (possibly shared) ones.
    outcome = model.load_state_dict(delta, strict=False, assign=True)
    if outcome.unexpected_keys:
        raise LmadaptError(
            f"the run's saved tensors do not fit the rebuilt model (e.g. {outcome.unexpected_keys[0]})",
            where=str(folder / DELTA_WEIGHTS),
            fix="load it with the lmadapt version that trained it (see manifest.json), or retrain",
        )
    model.requires_grad_(False)
    return model.eval(), prepared.tokenizer if strategy.input_tokenizer else None


def load_saved_tokenizer(folder: Path, config: RunConfig):
    """The tokenizer saved beside the model, as the backbone gave it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, trust_remote_code=config.model.trust_remote_code)


def load_input_tokenizer(folder: Path, config: RunConfig):
    """The tokenizer the model reads through (for prompt strategies: one that writes the prompt first)."""
    tokenizer = load_saved_tokenizer(folder, config)
    wrap = get_strategy(config.strategy_name).input_tokenizer
    return wrap(tokenizer, config.strategy, folder) if wrap else tokenizer
