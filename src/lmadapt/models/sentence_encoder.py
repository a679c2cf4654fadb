"""A backbone read as a sentence encoder (sentence-transformers), for the strategies that classify embeddings."""

from __future__ import annotations

from pathlib import Path

import torch

from lmadapt.config import ModelConfig
from lmadapt.models.classifier import explained_load_errors


def load_sentence_encoder(path: Path, model: ModelConfig):
    """The backbone in `path` (a local folder: nothing is asked of the hub) as a sentence-transformers model (a plain
    HF encoder gets mean pooling), on the GPU if there is one."""
    from sentence_transformers import SentenceTransformer

    with explained_load_errors(path, model):
        encoder = SentenceTransformer(str(path), trust_remote_code=model.trust_remote_code, local_files_only=True)
    encoder.max_seq_length = model.max_length
    return encoder


def sentence_embeddings(encoder, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
    """A sentence-transformers model's embeddings of a tokenised batch (its pooling and normalisation applied)."""
    features = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None:
        features["token_type_ids"] = token_type_ids
    return encoder(features)["sentence_embedding"]
