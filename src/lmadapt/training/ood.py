"""Out-of-scope detection fitted at the end of training: the feature statistics from the training rows, then each
method's threshold calibrated on validation, and the method to apply (ood.method, or for auto the one that abstains on
the most out-of-scope validation rows)."""

from __future__ import annotations

import logging

from lmadapt.config import OOD_METHODS, RunConfig
from lmadapt.data.prepare import PreparedData
from lmadapt.errors import LmadaptError
from lmadapt.evaluation.abstention import read_split
from lmadapt.evaluation.ood import calibrate_threshold
from lmadapt.inference.ood import FEATURE_METHODS, FeatureStatistics, OodDetector
from lmadapt.inference.predictor import Predictor
from lmadapt.models.classifier import classification_head

log = logging.getLogger(__name__)


def ood_methods(config: RunConfig, model, data: PreparedData) -> tuple[str, ...]:
    """The methods this run can calibrate: all four, or the logit scores where the model has no feature vector.
    Checked before training, so that what cannot be calibrated is refused before any work."""
    has_calibration_rows = len(data.out_of_scope_rows.get("validation", ())) or (
        config.ood.train_as_class and config.ood.label in data.validation.labels
    )
    if config.ood.method == "auto" and not has_calibration_rows:
        raise LmadaptError(
            "ood.method=auto chooses the score that abstains on the most out-of-scope validation rows, and the "
            "validation data has none",
            where="ood.method",
            fix="name the data's out-of-scope label in ood.label, hold labels out with ood.holdout_share, or "
            "choose a method (e.g. ood.method=knn)",
        )
    try:
        classification_head(model, len(data.labels))
    except LmadaptError:
        if config.ood.method in FEATURE_METHODS:
            raise LmadaptError(
                f"ood.method={config.ood.method} reads the classifier's features, and this strategy's model scores "
                "labels without a classification head",
                where="ood.method",
                fix="use ood.method=msp, energy or auto (which then chooses between those two)",
            ) from None
        return tuple(m for m in OOD_METHODS if m not in FEATURE_METHODS)
    return OOD_METHODS


def fit_detector(predictor: Predictor, data: PreparedData, config: RunConfig, methods: tuple[str, ...]) -> OodDetector:
    """The run's detector: statistics fitted on the training rows' features, thresholds on validation."""
    ood, labels = config.ood, data.labels
    ood_class = labels.label2id[ood.label] if ood.train_as_class else None
    in_scope = [i for i in range(len(labels)) if i != ood_class]
    statistics = None
    if any(m in FEATURE_METHODS for m in methods):
        _, features = predictor.logits_and_features(data.train.texts, data.train.pairs, progress=True)
        ids = labels.encode(data.train.labels)
        statistics = FeatureStatistics.fit(features, ids, in_scope, ood.knn_k, ood.max_bank_rows, config.seed)
    detector = OodDetector(
        method=methods[0],
        thresholds=dict.fromkeys(methods, 0.0),
        abstain_label=ood.abstain_label,
        in_scope=in_scope,
        out_of_scope_labels=list(data.out_of_scope),
        ood_class=ood_class,
        ambiguity_gap=ood.ambiguity_gap,
        statistics=statistics,
    )
    readings = read_split(predictor, data.with_out_of_scope("validation"), detector, data.out_of_scope)
    for method in methods:
        threshold, _ = calibrate_threshold(
            readings.scores(method),
            readings.true_ids,
            readings.predicted_ids,
            readings.forced,
            ood.target_in_scope_recall,
            ood.max_in_scope_loss,
        )
        detector.thresholds[method] = threshold
        detector.calibration[method] = readings.figures(method, threshold)
    if ood.method == "auto":  # what the user gets: out-of-scope recall at the threshold, then AUROC
        figures = detector.calibration
        detector.method = max(methods, key=lambda m: (figures[m]["oos_recall"], figures[m]["auroc"]))
    else:
        detector.method = ood.method
    chosen = detector.calibration[detector.method]
    log.info(
        "out-of-scope detection: %s, threshold %.4g (validation: in-scope accuracy %.1f%%%s)",
        detector.method,
        detector.threshold,
        100 * chosen["in_scope_accuracy"],
        f", out-of-scope recall {100 * chosen['oos_recall']:.1f}%" if chosen.get("oos_recall") is not None else "",
    )
    return detector
