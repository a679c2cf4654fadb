"""Out-of-scope detection of a trained classifier: the scores, the statistics some of them read, and the abstention
they decide. Every score is higher for a text more likely out of scope:

- msp: 1 - the highest label probability (Hendrycks & Gimpel 2017, the baseline);
- energy: minus the log-sum-exp of the logits (Liu et al. 2020);
- mahalanobis: the squared Mahalanobis distance of the text's features (the classification head's input) to the
  nearest class mean, one covariance shared by all classes (Lee et al. 2018), fitted on the training rows;
- knn: the distance of the unit-normalised features to the k-th nearest training text's (Sun et al. 2022).

A run folder keeps the calibrated settings in ood.json and the fitted statistics in ood_statistics.safetensors.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from scipy.special import logsumexp, softmax
from sklearn.covariance import LedoitWolf
from sklearn.neighbors import NearestNeighbors
from sklearn.preprocessing import normalize

from lmadapt.config import OOD_METHODS
from lmadapt.errors import LmadaptError

OOD_SETTINGS = "ood.json"
OOD_STATISTICS = "ood_statistics.safetensors"
FEATURE_METHODS = ("mahalanobis", "knn")
# Why a prediction abstained.
OUT_OF_SCOPE, OUT_OF_SCOPE_CLASS, AMBIGUOUS = "out_of_scope", "out_of_scope_class", "ambiguous"


@dataclass
class FeatureStatistics:
    """What the feature scores read, fitted on the training rows' features: the in-scope class means, the precision
    matrix of their shared covariance (Ledoit-Wolf shrinkage: stable when there are fewer rows than dimensions), and
    a bank of unit-normalised training features."""

    class_means: np.ndarray
    precision: np.ndarray
    bank: np.ndarray
    k: int

    @classmethod
    def fit(
        cls, features: np.ndarray, label_ids: np.ndarray, in_scope: list[int], k: int, max_bank_rows: int, seed: int
    ) -> FeatureStatistics:
        keep = np.isin(label_ids, in_scope)
        features, label_ids = features[keep].astype(np.float64), label_ids[keep]
        present = [c for c in in_scope if np.any(label_ids == c)]
        means = np.stack([features[label_ids == c].mean(axis=0) for c in present])
        centred = features - means[np.searchsorted(present, label_ids)]
        precision = LedoitWolf(assume_centered=True).fit(centred).precision_
        bank = normalize(features)
        if len(bank) > max_bank_rows:
            bank = bank[np.sort(np.random.default_rng(seed).choice(len(bank), max_bank_rows, replace=False))]
        return cls(means.astype(np.float32), precision.astype(np.float32), bank.astype(np.float32), k)

    @cached_property
    def _projected_means(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(P in float64, P mu for every class, mu'P mu for every class): the parts of the distance that do not
        depend on the text, computed once."""
        precision, means = self.precision.astype(np.float64), self.class_means.astype(np.float64)
        projected = means @ precision
        return precision, projected, np.einsum("ij,ij->i", projected, means)

    def mahalanobis(self, features: np.ndarray) -> np.ndarray:
        """Squared distance to the nearest class mean: f'Pf - 2 f'P mu + mu'P mu, for every class at once."""
        features = features.astype(np.float64)
        precision, projected_means, of_means = self._projected_means
        own = np.einsum("ij,ij->i", features @ precision, features)
        return (own[:, None] - 2 * features @ projected_means.T + of_means[None, :]).min(axis=1)

    @cached_property
    def _neighbours(self) -> NearestNeighbors:
        return NearestNeighbors(n_neighbors=min(self.k, len(self.bank)), algorithm="brute").fit(self.bank)

    def knn(self, features: np.ndarray) -> np.ndarray:
        distances, _ = self._neighbours.kneighbors(normalize(features.astype(np.float32)))
        return distances[:, -1]

    def save(self, path: Path) -> None:
        from safetensors.numpy import save_file

        tensors = {"class_means": self.class_means, "precision": self.precision, "bank": self.bank}
        save_file({name: np.ascontiguousarray(value) for name, value in tensors.items()}, str(path))

    @classmethod
    def load(cls, path: Path, k: int) -> FeatureStatistics:
        from safetensors.numpy import load_file

        tensors = load_file(str(path))
        return cls(tensors["class_means"], tensors["precision"], tensors["bank"], k)


def ood_scores(method: str, logits: np.ndarray, features: np.ndarray | None, statistics, in_scope: list[int]):
    """The out-of-scope score of each row (higher: more likely out of scope) by `method`; the logit scores read the
    in-scope labels' logits only (not a trained out-of-scope class's)."""
    in_scope_logits = logits[:, in_scope].astype(np.float64)
    if method == "msp":
        return 1.0 - softmax(in_scope_logits, axis=1).max(axis=1)
    if method == "energy":
        return -logsumexp(in_scope_logits, axis=1)
    if features is None or statistics is None:
        raise LmadaptError(f"the {method} score reads the classifier's features, and none were read")
    return statistics.mahalanobis(features) if method == "mahalanobis" else statistics.knn(features)


@dataclass
class OodDetector:
    """A run's calibrated out-of-scope decision: abstain when the chosen method's score is above its threshold, when
    the model predicts a trained out-of-scope class, or (optionally) when the top two labels are too close."""

    method: str
    thresholds: dict[str, float]  # every method calibrated on validation; `method` is the one applied
    abstain_label: str
    in_scope: list[int]
    out_of_scope_labels: list[str] = field(default_factory=list)  # data labels whose rows are out of scope
    ood_class: int | None = None
    ambiguity_gap: float | None = None
    calibration: dict = field(default_factory=dict)  # the validation figures of each method at its threshold
    statistics: FeatureStatistics | None = None

    @property
    def threshold(self) -> float:
        return self.thresholds[self.method]

    @property
    def needs_features(self) -> bool:
        return self.method in FEATURE_METHODS

    def scores(self, logits: np.ndarray, features: np.ndarray | None, method: str | None = None) -> np.ndarray:
        return ood_scores(method or self.method, logits, features, self.statistics, self.in_scope)

    def forced(self, logits: np.ndarray) -> list[str | None]:
        """Abstentions whatever the score: a trained out-of-scope class predicted, or an ambiguous top two."""
        reasons: list[str | None] = [None] * len(logits)
        if self.ood_class is not None:
            for i in np.flatnonzero(logits.argmax(axis=1) == self.ood_class):
                reasons[i] = OUT_OF_SCOPE_CLASS
        if self.ambiguity_gap is not None and logits.shape[1] > 1:
            top_two = np.sort(softmax(logits.astype(np.float64), axis=1), axis=1)[:, -2:]
            for i in np.flatnonzero(top_two[:, 1] - top_two[:, 0] < self.ambiguity_gap):
                reasons[i] = reasons[i] or AMBIGUOUS
        return reasons

    def decide(self, logits: np.ndarray, features: np.ndarray | None) -> tuple[np.ndarray, list[str | None]]:
        """The chosen method's score of each row, and why each row abstains (None: it is answered)."""
        scores = self.scores(logits, features)
        reasons = [OUT_OF_SCOPE if s > self.threshold else r for s, r in zip(scores, self.forced(logits))]
        return scores, reasons

    def save(self, folder: Path) -> None:
        settings = {k: v for k, v in asdict(self).items() if k != "statistics"}
        settings["k"] = self.statistics.k if self.statistics is not None else None
        (folder / OOD_SETTINGS).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        if self.statistics is not None:
            self.statistics.save(folder / OOD_STATISTICS)

    @classmethod
    def load(cls, folder: Path) -> OodDetector | None:
        """The run's detector, or None for a run trained without out-of-scope detection."""
        path = folder / OOD_SETTINGS
        if not path.is_file():
            return None
        settings = json.loads(path.read_text(encoding="utf-8"))
        k = settings.pop("k")
        statistics = FeatureStatistics.load(folder / OOD_STATISTICS, k) if (folder / OOD_STATISTICS).is_file() else None
        detector = cls(**settings, statistics=statistics)
        if detector.method not in OOD_METHODS or (detector.needs_features and statistics is None):
            raise LmadaptError(
                f"the run's out-of-scope settings name method '{detector.method}' without what it reads",
                where=str(path),
                fix="restore the run folder, or retrain it",
            )
        return detector
