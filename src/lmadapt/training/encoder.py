"""Adapt a sentence encoder to pairs of texts that belong together (a query and its answer, a user's history and the
next item they liked), with in-batch negatives: each query learns to find its own positive among the other pairs'
positives in its batch (sentence-transformers' MultipleNegativesRankingLoss on its own trainer).

The result is an encoder folder, written atomically and signed like a run folder:

<output>/
  modules.json, config.json, model.safetensors, tokenizer files, 1_Pooling/ ...   SentenceTransformer-loadable
  encoder.json      backbone, max_length, the language guard's limit, the training settings and figures
  manifest.json     every file with sha256 and size; library versions

`load_encoder_folder` opens one (manifest verified) as an encoder that refuses texts its model cannot read.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmadapt.config import ModelConfig
from lmadapt.errors import LmadaptError
from lmadapt.inference.guard import checked_texts
from lmadapt.models.language import check_backbone_reads, require_readable, warn_if_pretrained_on_other_scripts
from lmadapt.models.resolve import resolve_backbone
from lmadapt.models.sentence_encoder import load_sentence_encoder
from lmadapt.runs import check_output_path, verify_manifest, workspace_folder, write_run_folder
from lmadapt.training.engine import bf16_supported
from lmadapt.training.progress import EpochLines, quiet_libraries

ENCODER_FILE = "encoder.json"

# Vocabularies this large (e5-multilingual's 250k tokens) make the word embeddings most of the model: training them
# costs gigabytes of optimizer state and pairs of one language barely move them.
FREEZE_EMBEDDINGS_ABOVE = 100_000


def is_encoder_folder(path: Path) -> bool:
    """A folder adapt_encoder wrote (it holds encoder.json)."""
    return (Path(path) / ENCODER_FILE).is_file()


def _checked_pairs(pairs: Any) -> tuple[list[str], list[str]]:
    """The queries and positives of `pairs` (an iterable of (query, positive) strings), or an error naming the first
    bad pair."""
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Iterable):
        raise LmadaptError(
            f"pairs must be a list of (query, positive) texts, got {type(pairs).__name__}",
            where="adapt_encoder pairs",
            fix='pass e.g. [("a film about space", "Apollo 13 (1995). Drama"), ...]',
        )
    queries, positives = [], []
    for n, pair in enumerate(pairs, 1):
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise LmadaptError(
                f"pair {n} is not a (query, positive) pair of texts: {str(pair)[:80]!r}",
                where="adapt_encoder pairs",
                fix="give each pair as a tuple of two texts",
            )
        query, positive = pair
        for role, text in (("query", query), ("positive", positive)):
            if not isinstance(text, str) or not text.strip():
                raise LmadaptError(
                    f"pair {n}: its {role} is empty or not a string ({text!r})",
                    where="adapt_encoder pairs",
                    fix="drop the pair or give it a text",
                )
        queries.append(query)
        positives.append(positive)
    if len(queries) < 2:
        raise LmadaptError(
            f"{len(queries)} pair(s): in-batch negatives need at least 2 (each pair's negatives are the others')",
            where="adapt_encoder pairs",
            fix="pass more pairs (hundreds or more to learn anything useful)",
        )
    return queries, positives


def _check_settings(epochs: float, batch_size: int, learning_rate: float, max_length: int) -> None:
    where = "adapt_encoder"
    if not isinstance(epochs, (int, float)) or isinstance(epochs, bool) or epochs <= 0:
        raise LmadaptError(f"epochs must be a number above 0, got {epochs!r}", where=where, fix="e.g. epochs=1")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 2:
        raise LmadaptError(
            f"batch_size must be a whole number of 2 or more, got {batch_size!r}",
            where=where,
            fix="e.g. batch_size=32: each pair's negatives are the other pairs in its batch",
        )
    if not isinstance(learning_rate, (int, float)) or isinstance(learning_rate, bool) or not 0 < learning_rate < 1:
        raise LmadaptError(
            f"learning_rate must lie between 0 and 1, got {learning_rate!r}", where=where, fix="e.g. 5e-5"
        )
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 8:
        raise LmadaptError(
            f"max_length must be a whole number of tokens, 8 or more, got {max_length!r}", where=where, fix="e.g. 128"
        )


def _word_embeddings(encoder) -> torch.nn.Module | None:
    first = encoder[0]
    model = getattr(first, "auto_model", None) or getattr(first, "model", None)
    return model.get_input_embeddings() if model is not None and hasattr(model, "get_input_embeddings") else None


def _dimension(encoder) -> int:
    # sentence-transformers 6 renamed get_sentence_embedding_dimension.
    return int((getattr(encoder, "get_embedding_dimension", None) or encoder.get_sentence_embedding_dimension)())


def _multiple_negatives_loss(encoder):
    try:
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:  # sentence-transformers before 6
        from sentence_transformers.losses import MultipleNegativesRankingLoss
    return MultipleNegativesRankingLoss(encoder)


def _train(encoder, queries, positives, workspace: Path, *, epochs, batch_size, learning_rate, seed) -> dict:
    """sentence-transformers' trainer over the pairs; returns the training figures."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from transformers import ProgressCallback

    bf16 = bf16_supported()
    args = SentenceTransformerTrainingArguments(
        output_dir=str(workspace),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=0.1,
        # A text twice in one batch would be its own negative: a popular item is the positive of many pairs.
        batch_sampler="no_duplicates",
        seed=seed,
        data_seed=seed,
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=max(1, min(50, len(queries) // batch_size // 4)),
        report_to="none",
        disable_tqdm=False,
        dataloader_num_workers=0,
    )

    class Trainer(SentenceTransformerTrainer):
        def add_model_card_callback(self, default_args_dict):
            """None: no model card is written, and its widget examples (a pass over the data) are not worth it."""

    trainer = Trainer(
        model=encoder,
        args=args,
        train_dataset=Dataset.from_dict({"query": queries, "positive": positives}),
        loss=_multiple_negatives_loss(encoder),
    )
    trainer.remove_callback(ProgressCallback)  # it prints each raw log dict
    trainer.add_callback(EpochLines())
    outcome = trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    return {
        "pairs": len(queries),
        "steps": trainer.state.global_step,
        "runtime_s": round(outcome.metrics.get("train_runtime", 0.0), 2),
        "pairs_per_s": round(outcome.metrics.get("train_samples_per_second", 0.0), 2),
        "first_loss": round(float(losses[0]), 4) if losses else None,
        "last_loss": round(float(losses[-1]), 4) if losses else None,
        "precision": "bf16" if bf16 else "fp32",
    }


def adapt_encoder(
    pairs: Iterable[tuple[str, str]],
    output: str | Path,
    *,
    backbone: str = "minilm",
    epochs: float = 1,
    batch_size: int = 32,
    learning_rate: float = 5e-5,
    seed: int = 42,
    max_length: int = 128,
    freeze_embeddings: bool | None = None,
    max_unknown_share: float = 0.1,
    overwrite: bool = False,
) -> Path:
    """Fine-tune `backbone` (packaged alias, local folder, an encoder folder written here, or hub id) on (query,
    positive) pairs with in-batch negatives and write the adapted encoder folder at `output`; returns its path.

    Texts the backbone cannot read (more than `max_unknown_share` of their tokens unknown to its tokenizer) are
    refused before training. `freeze_embeddings`: keep the word embeddings as they are (None: only for vocabularies
    over 100k tokens, e.g. e5-multilingual's, where they dominate memory). The same pairs, settings and seed give the
    same encoder on the same machine.
    """
    from transformers import set_seed

    queries, positives = _checked_pairs(pairs)
    _check_settings(epochs, batch_size, learning_rate, max_length)
    final = Path(output)
    check_output_path(final, folder=True, example="encoder")
    if final.exists() and not overwrite:
        raise LmadaptError(
            f"the output folder already exists: {final}", fix="choose another output, or pass overwrite=True"
        )
    model = ModelConfig(backbone=str(backbone), max_length=max_length, max_unknown_share=max_unknown_share)
    path = resolve_backbone(model.backbone)
    require_readable(path, model, queries + positives, where="the pairs' texts", setting="backbone")

    started = time.perf_counter()
    set_seed(seed)
    with quiet_libraries():
        encoder = load_sentence_encoder(path, model)
        embeddings = _word_embeddings(encoder)
        if freeze_embeddings is None:
            freeze_embeddings = embeddings is not None and embeddings.num_embeddings > FREEZE_EMBEDDINGS_ABOVE
        if freeze_embeddings and embeddings is not None:
            embeddings.requires_grad_(False)
        workspace = workspace_folder(final)
        try:
            training = _train(
                encoder,
                queries,
                positives,
                workspace,
                epochs=epochs,
                batch_size=batch_size,
                learning_rate=learning_rate,
                seed=seed,
            )
        finally:
            shutil.rmtree(workspace, ignore_errors=True)
    record = {
        "backbone": model.backbone,
        "backbone_path": str(path),
        "max_length": max_length,
        "max_unknown_share": max_unknown_share,
        "dimension": _dimension(encoder),
        "training": {
            **training,
            "epochs": epochs,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "seed": seed,
            "freeze_embeddings": bool(freeze_embeddings),
            "loss": "MultipleNegativesRankingLoss (in-batch negatives)",
            "total_s": round(time.perf_counter() - started, 2),
        },
    }

    def fill(staging: Path) -> None:
        encoder.save_pretrained(str(staging), create_model_card=False)
        (staging / ENCODER_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    with quiet_libraries():
        write_run_folder(final, fill, overwrite)
    return final


class AdaptedEncoder:
    """An encoder folder, loaded once: call it with texts for their vectors (a numpy array, one row a text). Texts its
    model cannot read are refused, as `lmadapt.encoder` refuses them for a backbone."""

    def __init__(self, path: Path, batch_size: int = 64, max_length: int | None = None):
        self.path = path
        self.record = json.loads((path / ENCODER_FILE).read_text(encoding="utf-8"))
        self.batch_size = batch_size
        self.model_config = ModelConfig(
            backbone=self.record["backbone"],
            max_length=int(max_length or self.record["max_length"]),
            max_unknown_share=float(self.record["max_unknown_share"]),
        )
        with quiet_libraries():
            self.model = load_sentence_encoder(path, self.model_config)
        self.model.eval()

    @property
    def dimension(self) -> int:
        return int(self.record["dimension"])

    def check_reads(self, texts: Sequence[str], where: str = "the texts to embed") -> list[str]:
        texts = checked_texts(texts)
        limit = self.model_config.max_unknown_share
        if limit < 1.0:
            backbone = self.model_config.backbone
            check_backbone_reads(self.model.tokenizer, texts, backbone, limit, where, predicting=True)
            warn_if_pretrained_on_other_scripts(backbone, texts)
        return texts

    def __call__(self, texts: Sequence[str] | str) -> np.ndarray:
        texts = self.check_reads(texts)
        return self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)


def load_encoder_folder(path: str | Path, batch_size: int = 64, max_length: int | None = None) -> AdaptedEncoder:
    """The encoder folder adapt_encoder wrote, after checking its manifest; `max_length`: where texts are cut (None:
    where they were in training)."""
    path = Path(path)
    if not is_encoder_folder(path):
        raise LmadaptError(
            f"not an encoder folder (no {ENCODER_FILE})", where=str(path), fix="pass a folder adapt_encoder wrote"
        )
    verify_manifest(path)
    return AdaptedEncoder(path, batch_size, max_length)
