"""Out-of-scope detection: how well a score separates out-of-scope texts, what abstaining at a threshold does to
accuracy, choosing that threshold on validation rows, and two plots.

Convention: an ood score is a float per text, higher meaning more likely out of scope. A text is abstained
(answered "unknown") when its score is strictly above the threshold, or when a `forced` mask says so (the model
predicted a trained out-of-scope class, the top-2 probability gap was too small, ...). In `true_ids`, -1 marks an
out-of-scope row; any other value is the in-scope class id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve  # noqa: E402

from lmadapt.errors import LmadaptError  # noqa: E402

OUT_OF_SCOPE_ID = -1


def detection_metrics(scores: np.ndarray, is_ood: np.ndarray) -> dict:
    """How well the scores alone tell out-of-scope rows from in-scope ones, out of scope being the positive class.

    - auroc: roc_auc_score(is_ood, scores).
    - aupr: average_precision_score(is_ood, scores), the AUPR-Out.
    - fpr95: the share of out-of-scope rows accepted as in scope at the threshold that keeps 95% of the in-scope
      rows. On roc_curve(is_ood, scores), whose fpr is the share of in-scope rows flagged, it is 1 minus the largest
      tpr among points with fpr <= 0.05. This is the literature's FPR@95%TPR with in-distribution as the positive
      class (95% of in-distribution rows accepted; the share of out-of-distribution rows also accepted).
    """
    scores = _float_scores(scores, "detection_metrics")
    is_ood = np.asarray(is_ood, dtype=bool)
    _same_length(scores, is_ood, "scores", "is_ood", "detection_metrics")
    missing = [kind for kind, present in (("in-scope", (~is_ood).any()), ("out-of-scope", is_ood.any())) if not present]
    if missing:
        raise LmadaptError(
            f"detection metrics need both in-scope and out-of-scope rows; no {' or '.join(missing)} rows given",
            where="detection_metrics",
            fix="evaluate on a split that holds both in-scope and out-of-scope texts",
        )
    # Every ROC point is kept: the largest tpr within fpr <= 0.05 must not be dropped as an intermediate point.
    in_scope_flagged, ood_flagged, _ = roc_curve(is_ood, scores, drop_intermediate=False)
    ood_flagged_at_95 = ood_flagged[in_scope_flagged <= 0.05].max()
    return {
        "auroc": float(roc_auc_score(is_ood, scores)),
        "fpr95": float(1.0 - ood_flagged_at_95),
        "aupr": float(average_precision_score(is_ood, scores)),
    }


def abstention_metrics(true_ids: np.ndarray, predicted_ids: np.ndarray, abstained: np.ndarray) -> dict:
    """Accuracy once some rows are abstained. `predicted_ids` is the argmax class before abstention.

    Counts as right: an in-scope row predicted right and not abstained, and an out-of-scope row abstained.
    `oos_recall` and `oos_precision` are None when there are no out-of-scope rows; `oos_precision` is 0.0 when
    nothing is abstained.
    """
    true_ids = np.asarray(true_ids)
    predicted_ids = np.asarray(predicted_ids)
    abstained = np.asarray(abstained, dtype=bool)
    _same_length(true_ids, predicted_ids, "true_ids", "predicted_ids", "abstention_metrics")
    _same_length(true_ids, abstained, "true_ids", "abstained", "abstention_metrics")
    is_ood = true_ids == OUT_OF_SCOPE_ID
    in_scope_rows = int((~is_ood).sum())
    oos_rows = int(is_ood.sum())
    if in_scope_rows == 0:
        raise LmadaptError(
            "abstention metrics need in-scope rows; every true id is -1 (out of scope)",
            where="abstention_metrics",
            fix="evaluate on a split that holds in-scope texts",
        )
    predicted_right = ~is_ood & (predicted_ids == true_ids)
    in_scope_kept_right = int((predicted_right & ~abstained).sum())
    oos_abstained = int((is_ood & abstained).sum())
    abstained_rows = int(abstained.sum())
    if oos_rows == 0:
        oos_recall = oos_precision = None
    else:
        oos_recall = oos_abstained / oos_rows
        oos_precision = oos_abstained / abstained_rows if abstained_rows else 0.0
    return {
        "in_scope_accuracy": in_scope_kept_right / in_scope_rows,
        "accuracy_without_abstention": int(predicted_right.sum()) / in_scope_rows,
        "in_scope_abstained": int((~is_ood & abstained).sum()) / in_scope_rows,
        "oos_recall": oos_recall,
        "oos_precision": oos_precision,
        "accuracy": (in_scope_kept_right + oos_abstained) / len(true_ids),
        "in_scope_rows": in_scope_rows,
        "oos_rows": oos_rows,
    }


def calibrate_threshold(
    scores: np.ndarray,
    true_ids: np.ndarray,
    predicted_ids: np.ndarray,
    forced: np.ndarray | None = None,
    target_in_scope_recall: float | None = None,
    max_in_scope_loss: float = 0.02,
) -> tuple[float, dict]:
    """The abstention threshold chosen on validation rows, and `abstention_metrics` there (plus key `rule`).

    - With `target_in_scope_recall` r (0 < r < 1): the smallest threshold t such that at least r of the in-scope
      rows have score <= t (a score among the in-scope ones). Forced rows are abstained anyway and do not move
      it.
    - Without it: the lowest threshold (so the most out-of-scope texts abstained) at which in-scope accuracy is at
      most `max_in_scope_loss` below the accuracy without abstention: abstaining on a text the model gets wrong
      costs nothing, on one it gets right costs 1 / in-scope rows. Over every distinct score and +inf (keep all,
      also when the forced abstentions alone exceed the budget).

    Neither rule needs out-of-scope rows. The threshold is a Python float and can be infinite: +inf never abstains
    on the score, -inf (the budget covers every right answer) always does; JSON writers must handle both.
    """
    scores, true_ids, predicted_ids, forced = _scored_rows(
        scores, true_ids, predicted_ids, forced, "calibrate_threshold"
    )
    is_ood = true_ids == OUT_OF_SCOPE_ID
    if not (~is_ood).any():
        raise LmadaptError(
            "no in-scope rows to set the threshold on",
            where="calibrate_threshold",
            fix="give validation rows with in-scope texts",
        )

    if target_in_scope_recall is not None:
        if not 0 < target_in_scope_recall < 1:
            raise LmadaptError(
                f"target in-scope recall must lie strictly between 0 and 1, not {target_in_scope_recall}",
                where="calibrate_threshold",
                fix="give a share such as 0.95",
            )
        in_scope_scores = np.sort(scores[~is_ood])
        # The ceil(r * n)-th smallest score; not np.quantile, whose "higher" and "inverted_cdf" methods land one
        # row too high when r * n is a whole number (e.g. higher: 1..10 at 0.8 gives 9; inverted_cdf: 0.28 * 25
        # rounds up to 7.000000000000001). Rounding first drops that floating-point noise.
        rows_kept = max(1, math.ceil(round(target_in_scope_recall * len(in_scope_scores), 9)))
        threshold = float(in_scope_scores[rows_kept - 1])
        rule = "target_in_scope_recall"
    else:
        if not 0 <= max_in_scope_loss < 1:
            raise LmadaptError(
                f"the in-scope accuracy budget must lie in [0, 1), not {max_in_scope_loss}",
                where="calibrate_threshold",
                fix="give a share such as 0.02 (two points of accuracy)",
            )
        sweep = _sweep_thresholds(scores, true_ids, predicted_ids, forced)
        right = int((~is_ood & (predicted_ids == true_ids)).sum())
        # Whole rows, with the floating-point noise of share * rows rounded away (0.03 * 100 is 3.0000000000000004).
        budget = math.floor(round(max_in_scope_loss * sweep.in_scope_rows, 9))
        within = np.flatnonzero(right - sweep.in_scope_kept_right <= budget)
        threshold = float(sweep.thresholds[within[0]]) if len(within) else float("inf")
        rule = "max_in_scope_loss"

    metrics = abstention_metrics(true_ids, predicted_ids, (scores > threshold) | forced)
    metrics["rule"] = rule
    return threshold, metrics


def plot_score_distributions(
    scores: np.ndarray, is_ood: np.ndarray, threshold: float, method: str, path: Path, title: str
) -> None:
    """Overlaid density histograms (shared bins) of in-scope and out-of-scope scores, the threshold dashed."""
    scores = _float_scores(scores, "plot_score_distributions")
    is_ood = np.asarray(is_ood, dtype=bool)
    _same_length(scores, is_ood, "scores", "is_ood", "plot_score_distributions")
    finite = np.isfinite(scores)
    bins = np.histogram_bin_edges(scores[finite], bins=40) if finite.any() else 40
    figure, axes = plt.subplots(figsize=(6, 4))
    for label, rows, colour in (("in scope", ~is_ood, "#3b75af"), ("out of scope", is_ood, "#d1495b")):
        shown = scores[rows & finite]
        if len(shown):
            axes.hist(shown, bins=bins, density=True, alpha=0.5, color=colour, label=f"{label} (n={int(rows.sum())})")
    if math.isfinite(threshold):
        axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    axes.set_xlabel(f"out-of-scope score ({method}; higher: more likely out of scope)")
    axes.set_ylabel("density")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def plot_accuracy_recall_tradeoff(
    scores: np.ndarray,
    true_ids: np.ndarray,
    predicted_ids: np.ndarray,
    threshold: float,
    path: Path,
    title: str,
    forced: np.ndarray | None = None,
) -> None:
    """In-scope accuracy (with abstention) against out-of-scope recall as the threshold moves over the scores;
    a marker at `threshold`, and a dotted line at the accuracy without abstention."""
    scores, true_ids, predicted_ids, forced = _scored_rows(
        scores, true_ids, predicted_ids, forced, "plot_accuracy_recall_tradeoff"
    )
    if not (true_ids == OUT_OF_SCOPE_ID).any():
        raise LmadaptError(
            "the accuracy / out-of-scope recall trade-off needs out-of-scope rows",
            where="plot_accuracy_recall_tradeoff",
            fix="plot on a split that holds out-of-scope texts",
        )
    sweep = _sweep_thresholds(scores, true_ids, predicted_ids, forced)
    chosen = abstention_metrics(true_ids, predicted_ids, (scores > threshold) | forced)
    figure, axes = plt.subplots(figsize=(5.5, 4.5))
    axes.plot(sweep.oos_recall, sweep.in_scope_accuracy, color="#3b75af", label="thresholds over the scores")
    axes.plot(
        chosen["oos_recall"],
        chosen["in_scope_accuracy"],
        "o",
        color="#d1495b",
        label=f"threshold {threshold:.4g}",
    )
    axes.axhline(chosen["accuracy_without_abstention"], color="grey", linestyle=":", label="without abstention")
    axes.set_xlim(-0.02, 1.02)
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("out-of-scope recall (share abstained)")
    axes.set_ylabel("in-scope accuracy (abstained counts as wrong)")
    axes.set_title(title)
    axes.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


@dataclass(frozen=True)
class _ThresholdSweep:
    """Per candidate threshold (ascending): counts and shares once rows with score > threshold or forced abstain."""

    thresholds: np.ndarray
    in_scope_kept_right: np.ndarray
    oos_abstained: np.ndarray
    in_scope_rows: int
    oos_rows: int

    @property
    def in_scope_accuracy(self) -> np.ndarray:
        return self.in_scope_kept_right / self.in_scope_rows

    @property
    def oos_recall(self) -> np.ndarray:
        return self.oos_abstained / self.oos_rows


def _sweep_thresholds(
    scores: np.ndarray, true_ids: np.ndarray, predicted_ids: np.ndarray, forced: np.ndarray
) -> _ThresholdSweep:
    """Every distinct score, with -inf (abstain all) and +inf (keep all), in O(n log n): a row is kept at t when
    its score <= t, so counting kept rows is a sorted search of t among the scores of each kind of row."""
    is_ood = true_ids == OUT_OF_SCOPE_ID
    thresholds = np.concatenate(([-np.inf], np.unique(scores), [np.inf]))
    # Only unforced rows move with the threshold; forced ones are abstained at every threshold.
    right_unforced_scores = np.sort(scores[~is_ood & (predicted_ids == true_ids) & ~forced])
    oos_unforced_scores = np.sort(scores[is_ood & ~forced])
    in_scope_kept_right = np.searchsorted(right_unforced_scores, thresholds, side="right")
    oos_kept = np.searchsorted(oos_unforced_scores, thresholds, side="right")
    oos_abstained = int((is_ood & forced).sum()) + len(oos_unforced_scores) - oos_kept
    return _ThresholdSweep(
        thresholds=thresholds,
        in_scope_kept_right=in_scope_kept_right,
        oos_abstained=oos_abstained,
        in_scope_rows=int((~is_ood).sum()),
        oos_rows=int(is_ood.sum()),
    )


def _scored_rows(scores, true_ids, predicted_ids, forced, where: str) -> tuple[np.ndarray, ...]:
    """The four per-row arrays as numpy, one value per row each (no forced rows when `forced` is None)."""
    scores = _float_scores(scores, where)
    true_ids, predicted_ids = np.asarray(true_ids), np.asarray(predicted_ids)
    forced = np.zeros(len(scores), dtype=bool) if forced is None else np.asarray(forced, dtype=bool)
    for name, values in (("true_ids", true_ids), ("predicted_ids", predicted_ids), ("forced", forced)):
        _same_length(scores, values, "scores", name, where)
    return scores, true_ids, predicted_ids, forced


def _float_scores(scores: np.ndarray, where: str) -> np.ndarray:
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 1 or len(scores) == 0:
        raise LmadaptError(
            f"scores must be a non-empty 1-D array, got shape {scores.shape}",
            where=where,
            fix="give one ood score per text",
        )
    if np.isnan(scores).any():
        raise LmadaptError(
            f"{int(np.isnan(scores).sum())} ood score(s) are NaN",
            where=where,
            fix="check the scoring method's inputs (e.g. logits with NaN or inf)",
        )
    return scores


def _same_length(first: np.ndarray, second: np.ndarray, first_name: str, second_name: str, where: str) -> None:
    if len(first) != len(second):
        raise LmadaptError(
            f"{first_name} has {len(first)} rows but {second_name} has {len(second)}",
            where=where,
            fix="give one value per text in every array",
        )
