"""How a strategy's trained model is kept in a run's model/ folder, and read back: one object per kind, which the
strategy names in its registry entry (Strategy.artifact).

- WHOLE_MODEL: a complete HF model (full, scratch): `AutoModelForSequenceClassification` loads it.
- PEFT_ADAPTER: a peft adapter folder, head included (lora, ia3, prefix, prompt_tuning):
  `PeftModel.from_pretrained(backbone_classifier, model/)` loads it.
- TRAINED_TENSORS: only the tensors training changed (adapter, bitfit, head, the zero- and few-shot strategies), in
  delta.safetensors; the strategy rebuilds the model from the backbone and the run's config, then they are laid on.

Adapter and tensor folders also hold lmadapt_backbone.json (the backbone as configured and the folder it resolved
to). Every kind keeps the tokenizer, so a run reloads without its training data.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

import lmadapt.models.lstm  # noqa: F401  registers lmadapt's own model types with the Auto classes
import lmadapt.models.pooled  # noqa: F401
from lmadapt.config import RunConfig
from lmadapt.errors import LmadaptError
from lmadapt.models.contract import PreparedModel, StrategyContext
from lmadapt.models.peft_models import load_peft_adapter, peft_base_classifier
from lmadapt.models.resolve import resolve_backbone

DELTA_WEIGHTS = "delta.safetensors"
BACKBONE_RECORD = "lmadapt_backbone.json"

# The strategy's own prepare, which builds its model again in a context (kinds that keep only what training changed).
Rebuild = Callable[[StrategyContext], PreparedModel]


class SavedModel(Protocol):
    """A kind of model/ folder: how a trained model is written into it and built again from it."""

    needs_backbone: bool  # the folder holds only what training changed; the backbone comes from elsewhere

    def save(self, model, tokenizer, folder: Path) -> None: ...

    def load(self, folder: Path, config: RunConfig, context: StrategyContext | None, rebuild: Rebuild, trainable: bool):
        """(model in eval mode, the PreparedModel the strategy rebuilt it from, or None); `context` (on the
        backbone) is given to the kinds that need one."""


def trained_tensors(model) -> dict[str, torch.Tensor]:
    """The parameters training changed: every one that requires a gradient."""
    return {name: p.detach().contiguous().cpu() for name, p in model.named_parameters() if p.requires_grad}


@dataclass(frozen=True)
class WholeModel:
    needs_backbone: bool = False

    def save(self, model, tokenizer, folder: Path) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    def load(self, folder: Path, config: RunConfig, context, rebuild: Rebuild, trainable: bool):
        from transformers import AutoModelForSequenceClassification

        trust = config.model.trust_remote_code
        return AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=trust).eval(), None


@dataclass(frozen=True)
class PeftAdapter:
    needs_backbone: bool = True

    def save(self, model, tokenizer, folder: Path) -> None:
        model.save_pretrained(folder)  # a peft model writes only the adapter and the head
        tokenizer.save_pretrained(folder)

    def load(self, folder: Path, config: RunConfig, context: StrategyContext, rebuild: Rebuild, trainable: bool):
        base, _ = peft_base_classifier(context, config.strategy)
        return load_peft_adapter(base, folder, trainable).eval(), None


@dataclass(frozen=True)
class TrainedTensors:
    needs_backbone: bool = True

    def save(self, model, tokenizer, folder: Path) -> None:
        from safetensors.torch import save_file

        save_file(trained_tensors(model), str(folder / DELTA_WEIGHTS))
        tokenizer.save_pretrained(folder)

    def load(self, folder: Path, config: RunConfig, context: StrategyContext, rebuild: Rebuild, trainable: bool):
        from safetensors.torch import load_file

        prepared = rebuild(context)
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
        return model.eval(), prepared


WHOLE_MODEL, PEFT_ADAPTER, TRAINED_TENSORS = WholeModel(), PeftAdapter(), TrainedTensors()


def save_backbone_record(folder: Path, backbone: str | None, backbone_path: Path | None) -> None:
    record = {"backbone": backbone, "path": str(Path(backbone_path).resolve()) if backbone_path else None}
    (folder / BACKBONE_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def backbone_of(folder: Path) -> Path:
    """The backbone an adapter or tensor run needs: as configured, else the folder it resolved to at training."""
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
