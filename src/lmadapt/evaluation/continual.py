"""Continual-learning metrics from the accuracy matrix R, where R[i][j] is the accuracy on experience j's
test set after learning experiences 0..i (Lopez-Paz & Ranzato 2017; Chaudhry et al. 2018)."""

from __future__ import annotations

import statistics


def stream_metrics(matrix: list[list[float]], initial: list[float] | None = None) -> dict:
    """average_accuracy: the final row's mean; forgetting: mean over all but the last experience of
    (best accuracy it ever had before the end - final accuracy); backward_transfer: mean of (final -
    just after learning it); forward_transfer: mean of (accuracy just before learning it - `initial`,
    the untrained model's); average_accuracy_by_step: mean accuracy on the experiences seen so far."""
    steps = len(matrix)
    final = matrix[-1]
    figures = {
        "average_accuracy": statistics.fmean(final),
        "average_accuracy_by_step": [statistics.fmean(row[: i + 1]) for i, row in enumerate(matrix)],
        "forgetting": None,
        "backward_transfer": None,
        "forward_transfer": None,
    }
    if steps < 2 or len(final) != steps:
        return figures
    earlier = range(steps - 1)
    figures["forgetting"] = statistics.fmean(max(matrix[i][j] for i in range(j, steps - 1)) - final[j] for j in earlier)
    figures["backward_transfer"] = statistics.fmean(final[j] - matrix[j][j] for j in earlier)
    # Cells never measured (an updated run's earlier rows on later data; the untrained model's accuracy on
    # data that came later) are None and left out.
    forward = [
        matrix[j - 1][j] - initial[j]
        for j in range(1, steps)
        if initial is not None and initial[j] is not None and matrix[j - 1][j] is not None
    ]
    figures["forward_transfer"] = statistics.fmean(forward) if forward else None
    return figures
