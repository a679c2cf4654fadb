"""Fold a LoRA or IA3 adapter into its backbone: a standalone HF model that computes the same logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmadapt.errors import LmadaptError
from lmadapt.inference.predictor import Predictor
from lmadapt.models.peft_models import adapter_folds
from lmadapt.runs import Run, replace_folder_atomic


def merge_run(run: Run, output: Path, tolerance: float = 1e-4, overwrite: bool = False) -> dict:
    """Write `run` with its adapter folded into the backbone to `output`; refuse if the logits move more than `tolerance`."""
    if not adapter_folds(run.path / "model"):
        raise LmadaptError(
            f"a '{run.run_config.strategy_name}' run has no adapter that folds into the backbone",
            where=str(run.path),
            fix="merge runs of the lora or ia3 strategy; other runs are served as they are",
        )
    output = Path(output)
    if output.exists() and not overwrite:
        raise LmadaptError(
            f"output folder already exists: {output}", fix="choose another --output, or pass --overwrite"
        )
    tokenizer = run.load_tokenizer()
    adapted = run.load_model(share_backbone=False)  # merging writes into the backbone's weights
    texts = run.own_texts(64)
    before = Predictor(adapted, tokenizer, run.labels, run.max_length).logits(texts)
    merged = adapted.merge_and_unload()
    after = Predictor(merged, tokenizer, run.labels, run.max_length).logits(texts)
    difference = float(np.abs(before - after).max())
    report = {"max_abs_logit_difference": difference, "tolerance": tolerance, "texts_checked": len(texts)}
    if not difference <= tolerance:
        raise LmadaptError(
            f"the merged model's logits differ by up to {difference:.3g} from the adapter's (tolerance {tolerance:g})",
            where=str(run.path),
            fix="keep serving the unmerged run, or raise --tolerance if this drift is acceptable",
        )
    merged.config.id2label = run.labels.id2label
    merged.config.label2id = run.labels.label2id

    def write(folder: Path) -> None:
        merged.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    replace_folder_atomic(output, write)
    return {**report, "output": str(output)}
