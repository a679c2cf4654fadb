"""Batch prediction: length-sorted batches, dynamic padding, any inference engine, scores per label."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from lmadapt.data.labels import MULTI_LABEL, LabelMap
from lmadapt.errors import LmadaptError
from lmadapt.inference.engines import ENGINES, TorchEngine
from lmadapt.inference.guard import checked_texts
from lmadapt.inference.ood import OodDetector
from lmadapt.inference.scores import decisions, scores_from_logits


def encode(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None, max_length: int):
    """Token ids for texts (and pairs), truncated, unpadded: padding happens per batch."""
    return tokenizer(list(texts), list(pairs) if pairs is not None else None, truncation=True, max_length=max_length)


@contextmanager
def evaluating(model):
    """`model` in eval mode for the block, then back in the mode it was in (no-op for None)."""
    if model is None:
        yield
        return
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def worker_count(requested: int) -> int:
    """Batches to run at once: `requested`, or one per core for 0."""
    return requested or os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


@contextmanager
def torch_threads(workers: int):
    """Split the cores between `workers` concurrent batches, so PyTorch's own threads do not oversubscribe them.

    The count comes from the cores, not from the current setting, so overlapping calls agree on it."""
    if workers <= 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads_per_worker(workers))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Predictor:
    """Scores texts with a classification model (or an inference engine) and names the labels.

    `workers` > 1 runs that many batches at once on threads, each engine call on its own core.
    """

    def __init__(
        self,
        model,
        tokenizer,
        labels: LabelMap,
        max_length: int,
        batch_size: int = 64,
        workers: int = 1,
        guard: Callable[[Sequence[str]], list[str]] | None = None,
        ood: OodDetector | None = None,
    ):
        if workers < 1:
            raise LmadaptError(f"workers must be at least 1, not {workers}", fix="pass workers=1 or more")
        self.engine = model if isinstance(model, ENGINES) else TorchEngine(model)
        self.tokenizer = tokenizer
        self.labels = labels
        self.max_length = max_length
        self.batch_size = batch_size
        self.workers = workers
        self.guard = guard or checked_texts  # a run's predictor checks what a run can read, too
        self.ood = ood

    @property
    def model(self):
        """The PyTorch model (None for an ONNX engine)."""
        return getattr(self.engine, "model", None)

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Each text's length in the model's tokens (truncated as predicted): what a batch is padded to."""
        return [len(ids) for ids in encode(self.tokenizer, texts, None, self.max_length)["input_ids"]]

    def logits(self, texts: Sequence[str], pairs: Sequence[str] | None = None, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return self._each_batch(texts, pairs, self.engine, progress)

    def features(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> np.ndarray:
        """The classifier's view of each text: the input of its classification head (e.g. the pooled [CLS] state,
        or a sentence embedding), one float32 row a text (from an exported graph: its `features` output)."""
        return self.logits_and_features(checked_texts(texts), pairs)[1]

    def logits_and_features(
        self, texts: Sequence[str], pairs: Sequence[str] | None = None, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """The logits and the features (see `features`) of each text, from one forward pass."""
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32), np.zeros((0, 0), dtype=np.float32)
        both = self._each_batch(
            texts,
            pairs,
            lambda batch: np.concatenate(self.engine.with_features(batch, len(self.labels)), axis=1),
            progress,
        )
        return both[:, : len(self.labels)], both[:, len(self.labels) :]

    def _each_batch(self, texts: Sequence[str], pairs: Sequence[str] | None, read, progress: bool) -> np.ndarray:
        """`read(padded batch)` over the texts in batches of similar length; its rows in the texts' order."""
        encoded = encode(self.tokenizer, texts, pairs, self.max_length)
        names = [name for name in (self.engine.input_names or encoded.keys()) if name in encoded]
        # Sorting by length makes each batch's padding small; the original order is restored below.
        order = np.argsort([len(ids) for ids in encoded["input_ids"]], kind="stable")
        batches = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]

        def run(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            rows = {name: [encoded[name][i] for i in index] for name in names}
            return index, read(dict(self.tokenizer.pad(rows, return_tensors="np")))

        out = None
        with evaluating(self.model), ThreadPoolExecutor(self.workers) as pool, torch_threads(self.workers):
            done = pool.map(run, batches) if self.workers > 1 else map(run, batches)
            disable = None if progress else True  # None: no bar off a terminal
            for index, rows in tqdm(
                done, total=len(batches), desc="predicting", unit="batch", leave=False, disable=disable
            ):
                if out is None:
                    out = np.zeros((len(texts), rows.shape[1]), dtype=np.float32)
                out[index] = rows
        return out

    def scores(self, texts: Sequence[str], pairs: Sequence[str] | None = None, progress: bool = False) -> np.ndarray:
        return scores_from_logits(self.logits(texts, pairs, progress), self.labels.task)

    def decide(self, scores: np.ndarray) -> list:
        """The label (single-label) or the list of labels (multi-label) of each row of scores."""
        decided = decisions(scores, self.labels.task, self.labels.threshold)
        if self.labels.task == MULTI_LABEL:
            return [[self.labels.labels[j] for j in np.flatnonzero(row)] for row in decided]
        return [self.labels.labels[j] for j in decided]

    def predictions(
        self, texts: Sequence[str], pairs: Sequence[str] | None = None, progress: bool = False, abstain: bool = True
    ) -> Predictions:
        """Label scores and decisions of (already guarded) texts; with the run's out-of-scope detector, its score of
        each text and, where `abstain`, its abstentions in place of the label."""
        ood = self.ood
        if ood is None:
            scores = self.scores(texts, pairs, progress)
            return Predictions(scores, self.decide(scores))
        if ood.needs_features:
            logits, features = self.logits_and_features(texts, pairs, progress)
        else:
            logits, features = self.logits(texts, pairs, progress), None
        ood_scores, reasons = ood.decide(logits, features)
        scores = scores_from_logits(logits, self.labels.task)
        labels = self.decide(scores)
        if abstain:
            labels = [ood.abstain_label if reason else label for label, reason in zip(labels, reasons)]
        else:
            reasons = [None] * len(labels)
        return Predictions(scores, labels, ood_scores, reasons)

    def predict(
        self,
        texts: Sequence[str] | str,
        pairs: Sequence[str] | None = None,
        progress: bool = False,
        abstain: bool = True,
    ) -> list[dict]:
        """Labels and label scores of each text, after the guard (empty texts, and for a run's predictor texts its
        backbone cannot read, are refused). A run with out-of-scope detection also gives each text's `ood_score`
        and whether it `abstained` (answering the abstain label; `abstain=False`: always the best label)."""
        texts = self.guard(texts)
        predicted = self.predictions(texts, pairs, progress, abstain)
        key = "labels" if self.labels.task == MULTI_LABEL else "label"
        results = []
        for i, (decided, row) in enumerate(zip(predicted.labels, predicted.scores)):
            result = {key: decided, "scores": {label: float(s) for label, s in zip(self.labels.labels, row)}}
            if predicted.ood_scores is not None:
                reason = predicted.reasons[i]
                result |= {"abstained": reason is not None, "ood_score": float(predicted.ood_scores[i])}
                if reason is not None:
                    result["reason"] = reason
            results.append(result)
        return results


@dataclass
class Predictions:
    """What a predictor says of a batch of texts: label scores (one row a text) and the decided labels; with an
    out-of-scope detector, each text's score and why it abstained (None: answered)."""

    scores: np.ndarray
    labels: list
    ood_scores: np.ndarray | None = None
    reasons: list[str | None] | None = None
