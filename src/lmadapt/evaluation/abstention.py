"""A predictor with an out-of-scope detector, read on a labelled split: every calibrated method's figures (in-scope
accuracy with abstention, out-of-scope recall and precision; AUROC, FPR@95 and AUPR where the split has both kinds
of rows) and the PNGs of the applied method's scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmadapt.data.split import Split
from lmadapt.evaluation.ood import (
    abstention_metrics,
    detection_metrics,
    plot_accuracy_recall_tradeoff,
    plot_score_distributions,
)
from lmadapt.inference.ood import FEATURE_METHODS, OodDetector
from lmadapt.inference.predictor import Predictor

SCORES_PLOT, TRADEOFF_PLOT = "ood_scores.png", "ood_tradeoff.png"


@dataclass
class OodReadings:
    """What the scores and the metrics read of a split: logits (and features), each row's true label id (-1 for an
    out-of-scope row), the model's best label id, and the abstentions forced whatever the score."""

    detector: OodDetector
    logits: np.ndarray
    features: np.ndarray | None
    true_ids: np.ndarray
    predicted_ids: np.ndarray
    forced: np.ndarray

    @property
    def is_ood(self) -> np.ndarray:
        return self.true_ids < 0

    @property
    def has_both_kinds(self) -> bool:
        return bool(self.is_ood.any() and (~self.is_ood).any())

    def scores(self, method: str) -> np.ndarray:
        return self.detector.scores(self.logits, self.features, method)

    def figures(self, method: str, threshold: float) -> dict:
        """`method`'s abstention figures at `threshold`, and its detection figures where both kinds of rows exist."""
        scores = self.scores(method)
        figures = {
            "threshold": threshold,
            **abstention_metrics(self.true_ids, self.predicted_ids, self.forced | (scores > threshold)),
        }
        if self.has_both_kinds:
            figures |= detection_metrics(scores, self.is_ood)
        return figures


def read_split(
    predictor: Predictor, split: Split, detector: OodDetector, out_of_scope: Sequence[str], progress: bool = False
) -> OodReadings:
    """Read `split` with `predictor` (one pass, features too where a method of `detector` needs them); rows labelled
    with one of `out_of_scope` are the out-of-scope rows."""
    if any(method in FEATURE_METHODS for method in detector.thresholds):
        logits, features = predictor.logits_and_features(split.texts, split.pairs, progress)
    else:
        logits, features = predictor.logits(split.texts, split.pairs, progress), None
    label2id, outside = predictor.labels.label2id, set(out_of_scope)
    true_ids = np.array([-1 if label in outside else label2id[label] for label in split.labels], dtype=int)
    forced = np.array([reason is not None for reason in detector.forced(logits)], dtype=bool)
    return OodReadings(detector, logits, features, true_ids, logits.argmax(axis=1), forced)


def abstention_report(readings: OodReadings) -> dict:
    """The applied method's figures at its threshold, and every calibrated method's under `methods`."""
    detector = readings.detector
    methods = {method: readings.figures(method, threshold) for method, threshold in detector.thresholds.items()}
    return {"method": detector.method, **methods[detector.method], "methods": methods}


def plot_abstention(readings: OodReadings, folder: Path, title: str) -> None:
    """The applied method's score distributions and accuracy/recall trade-off as PNGs in `folder` (when the split
    has both kinds of rows)."""
    if not readings.has_both_kinds:
        return
    detector = readings.detector
    scores = readings.scores(detector.method)
    plot_score_distributions(scores, readings.is_ood, detector.threshold, detector.method, folder / SCORES_PLOT, title)
    plot_accuracy_recall_tradeoff(
        scores,
        readings.true_ids,
        readings.predicted_ids,
        detector.threshold,
        folder / TRADEOFF_PLOT,
        title,
        forced=readings.forced,
    )
