"""A backbone read as a sentence encoder (sentence-transformers), for the strategies that classify embeddings."""

from __future__ import annotations

import torch

from lmadapt.models.classifier import explained_load_errors
from lmadapt.models.contract import StrategyContext


def load_sentence_encoder(context: StrategyContext):
    """The backbone as a sentence-transformers model (a plain HF encoder gets mean pooling), on the GPU if
    there is one."""
    from sentence_transformers import SentenceTransformer

    with explained_load_errors(context.backbone_path, context.model):
        encoder = SentenceTransformer(str(context.backbone_path), trust_remote_code=context.model.trust_remote_code)
    encoder.max_seq_length = context.model.max_length
    return encoder


def sentence_embeddings(encoder, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
    """A sentence-transformers model's embeddings of a tokenised batch (its pooling and normalisation applied)."""
    features = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None:
        features["token_type_ids"] = token_type_ids
    return encoder(features)["sentence_embedding"]
