"""Batch prediction: length-sorted batches, dynamic padding, inference mode, scores per label."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from lmadapt.data.labels import MULTI_LABEL, LabelMap
from lmadapt.evaluation.metrics import decisions, scores_from_logits


def encode(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int):
    """Token ids for texts (and pairs), truncated, unpadded: padding happens per batch."""
    return tokenizer(list(texts), list(pairs) if pairs is not None else None, truncation=True, max_length=max_length)


class Predictor:
    """Scores texts with a classification model and names the labels."""

    def __init__(self, model, tokenizer, labels: LabelMap, max_length: int, batch_size: int = 64):
        self.model = model
        self.tokenizer = tokenizer
        self.labels = labels
        self.max_length = max_length
        self.batch_size = batch_size

    def logits(self, texts: Sequence[str], pairs: Sequence[str] | None = None, progress: bool = False) -> np.ndarray:
        from transformers import DataCollatorWithPadding

        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        encoded = encode(self.tokenizer, texts, pairs, self.max_length)
        features = [{key: encoded[key][i] for key in encoded} for i in range(len(texts))]
        # Sorting by length makes each batch's padding small; the original order is restored below.
        order = np.argsort([len(f["input_ids"]) for f in features], kind="stable")
        collate = DataCollatorWithPadding(self.tokenizer, return_tensors="pt")
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        batches = range(0, len(order), self.batch_size)
        with torch.inference_mode():
            for start in tqdm(batches, desc="predicting", unit="batch", disable=not progress, leave=False):
                index = order[start : start + self.batch_size]
                batch = {k: v.to(device) for k, v in collate([features[i] for i in index]).items()}
                out[index] = self.model(**batch).logits.float().cpu().numpy()
        self.model.train(was_training)
        return out

    def scores(self, texts: Sequence[str], pairs: Sequence[str] | None = None, progress: bool = False) -> np.ndarray:
        return scores_from_logits(self.logits(texts, pairs, progress), self.labels.task)

    def decide(self, scores: np.ndarray) -> list:
        """The label (single-label) or the list of labels (multi-label) of each row of scores."""
        decided = decisions(scores, self.labels.task, self.labels.threshold)
        if self.labels.task == MULTI_LABEL:
            return [[self.labels.labels[j] for j in np.flatnonzero(row)] for row in decided]
        return [self.labels.labels[j] for j in decided]

    def predict(self, texts: Sequence[str], pairs: Sequence[str] | None = None, progress: bool = False) -> list[dict]:
        scores = self.scores(texts, pairs, progress)
        key = "labels" if self.labels.task == MULTI_LABEL else "label"
        return [
            {key: decided, "scores": {label: float(s) for label, s in zip(self.labels.labels, row)}}
            for decided, row in zip(self.decide(scores), scores)
        ]
