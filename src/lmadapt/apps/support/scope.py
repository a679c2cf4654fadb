"""The bot's out-of-scope score: the intent run's own score (e.g. the Mahalanobis distance of its features) and how
unsure the intent is (1 - its probability), weighed by a logistic regression fitted on the calibration messages,
which hold out-of-scope examples. A message far from every intent but read with confidence is more often one the
bot has never seen than either signal alone says (bench/RESULTS.md, support).

The regression is cross-fitted: each calibration message is scored by the fold model that did not see it, so the
thresholds are calibrated on unseen scores; the bot scores with the mean of the fold models (one linear function
of the two log inputs, since each fold's scaler folds into its weights).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

FOLDS = 5
MIN_EXAMPLES = 10  # of each kind (in scope, out of scope) in calibration to fit the weights on
EPSILON = 1e-6  # keeps the logs finite at a zero input


def score_inputs(run_scores: np.ndarray, confidences: np.ndarray, shift: float) -> np.ndarray:
    """(n, 2): log of the run's score above its calibration minimum, log of the intent's uncertainty."""
    raw = np.column_stack([np.asarray(run_scores, float) - shift, 1.0 - np.asarray(confidences, float)])
    return np.log(raw.clip(min=0.0) + EPSILON)


@dataclass
class ScopeScore:
    """Log-odds that a message is out of scope, from the run's score and the intent's probability."""

    shift: float  # the lowest run score in calibration: the first input's zero
    weights: list[float]
    intercept: float

    def __call__(self, run_scores: np.ndarray, confidences: np.ndarray) -> np.ndarray:
        return score_inputs(run_scores, confidences, self.shift) @ np.asarray(self.weights) + self.intercept

    def to_json(self) -> dict:
        return asdict(self)


def fit_scope_score(
    run_scores: np.ndarray, confidences: np.ndarray, out_of_scope: np.ndarray, seed: int
) -> tuple[ScopeScore, np.ndarray] | None:
    """The score fitted on calibration messages and each message's score from the fold model that did not see it;
    None when there are fewer than MIN_EXAMPLES messages of either kind."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out_of_scope = np.asarray(out_of_scope, bool)
    if min(out_of_scope.sum(), (~out_of_scope).sum()) < MIN_EXAMPLES:
        return None
    shift = float(np.min(run_scores))
    inputs = score_inputs(run_scores, confidences, shift)
    held_out = np.empty(len(inputs))
    weights, intercepts = [], []
    for train, test in StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(inputs, out_of_scope):
        scaler, regression = make_pipeline(StandardScaler(), LogisticRegression()).fit(
            inputs[train], out_of_scope[train]
        )
        fold_weights = regression.coef_[0] / scaler.scale_
        fold_intercept = regression.intercept_[0] - fold_weights @ scaler.mean_
        held_out[test] = inputs[test] @ fold_weights + fold_intercept
        weights.append(fold_weights)
        intercepts.append(fold_intercept)
    mean_weights = np.mean(weights, axis=0)
    return ScopeScore(shift, [float(w) for w in mean_weights], float(np.mean(intercepts))), held_out
