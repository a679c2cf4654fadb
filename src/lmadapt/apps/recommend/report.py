"""The evaluation report: per-model tables of metrics.evaluate's figures with 95% confidence intervals, written as
JSON, Markdown and a PNG (used by bench/recommend.py and `lmadapt recommend evaluate`).

Intervals. With two or more seeds, each metric's interval is Student's t-interval over the per-seed means:
mean +- t(0.975, n - 1) x sd / sqrt(n), sd with n - 1 (it reads how much the figure moves with the seed: the
split, the sampling and the model's initialisation). With one seed it is a percentile bootstrap over the evaluated
users (2,000 resamples of the users with replacement, seeded): how much the figure would move with another sample of
users of the same population, not with another seed. Catalogue coverage is not a per-user figure, so a single seed
gives it no interval. `interval` in each summary row says which was used.

Metrics (see metrics.py): NDCG, Recall, Precision, MAP, HR at k in {5, 10, 20}, MRR (full ranking, not cut) and
coverage at k. MAP@k is normalised by min(R, k) (R: the user's relevant items); `map_all_relevant_at_k`, the
same sum over R, is kept in the JSON. Every figure is on the full ranking: no sampled metric is computed here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from lmadapt.apps.recommend.metrics import KS  # noqa: E402
from lmadapt.errors import LmadaptError  # noqa: E402

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
T_OVER_SEEDS = "t over seeds"
BOOTSTRAP_OVER_USERS = "bootstrap over users"
NONE = "none (one seed, no per-user values)"

# The report's metrics in table order; the titles are the Markdown column heads.
METRIC_TITLES = {
    **{f"{name}_at_{k}": f"{title}@{k}" for k in KS for name, title in (("ndcg", "NDCG"), ("hr", "HR"))},
    **{f"{name}_at_{k}": f"{title}@{k}" for k in KS for name, title in (("recall", "Recall"), ("precision", "P"))},
    **{f"map_at_{k}": f"MAP@{k}" for k in KS},
    "mrr": "MRR",
    **{f"coverage_at_{k}": f"Cov@{k}" for k in KS},
}
METRICS = tuple(METRIC_TITLES)
# What a table shows unless told otherwise: the k = 10 figures the field reports first.
DEFAULT_TABLE = ("ndcg_at_10", "hr_at_10", "recall_at_10", "precision_at_10", "map_at_10", "mrr", "coverage_at_10")
DEFAULT_PLOT = ("ndcg_at_10", "hr_at_10")


def shown_metrics(results_by_model: Mapping[str, Sequence[Mapping]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The table's and the plot's metrics for these results: DEFAULT_TABLE and DEFAULT_PLOT at k = 10 when every
    result has it, else at the largest k of KS that every result has."""
    every = [result for results in results_by_model.values() for result in results]
    common = [k for k in KS if all(f"ndcg_at_{k}" in result for result in every)]
    if not common:
        raise LmadaptError(
            f"the results share no cut-off of {', '.join(map(str, KS))}",
            where="report",
            fix="evaluate every model with one of these ks (evaluation.ks)",
        )
    k = 10 if 10 in common else common[-1]
    return tuple(m.replace("_at_10", f"_at_{k}") for m in DEFAULT_TABLE), tuple(
        m.replace("_at_10", f"_at_{k}") for m in DEFAULT_PLOT
    )


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float, float]:
    """(mean, sd, low, high) of Student's t-interval for the mean of `values` (two or more; sd with n - 1)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        raise ValueError("a t-interval needs two or more values")
    mean, sd = float(values.mean()), float(values.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, len(values) - 1)) * sd / np.sqrt(len(values))
    return mean, sd, mean - half, mean + half


def bootstrap_interval(
    per_user: Sequence[float], confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """(low, high) percentile bootstrap interval for the mean of per-user values: `resamples` resamples of the
    users with replacement, seeded."""
    values = np.asarray(per_user, dtype=np.float64)
    if not len(values):
        raise ValueError("a bootstrap interval needs at least one value")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    # In chunks: resamples x users indices at once would take gigabytes on a large user base.
    chunk = max(1, 2_000_000 // len(values))
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        means[start:stop] = values[rng.integers(0, len(values), (stop - start, len(values)))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_intervals(result: Mapping, metrics: Sequence[str] = METRICS, seed: int = 0) -> dict[str, list[float]]:
    """{metric: [low, high]} bootstrap intervals from one evaluate(..., per_user=True) result, for the metrics it
    has per user (coverage has none). Keep it beside a stored result that drops the per-user values."""
    per_user = result.get("per_user")
    if per_user is None:
        raise LmadaptError(
            "the result has no per-user values to bootstrap",
            where="report",
            fix="evaluate with per_user=True",
        )
    return {
        metric: [round(v, 6) for v in bootstrap_interval(per_user[metric].to_numpy(), seed=seed)]
        for metric in metrics
        if metric in per_user.columns
    }


def summarise_model(model: str, results: Sequence[Mapping], metrics: Sequence[str] = METRICS) -> dict:
    """One summary row for a model from its per-seed results (evaluate's output, or stored rows with the same
    keys): each metric's mean, `_std` (over seeds; absent with one seed) and `_ci` [low, high]. One result's interval
    is the bootstrap over its users, from its `per_user` values or its stored `bootstrap` {metric: [low, high]}."""
    if not results:
        raise LmadaptError(f"no results for model '{model}'", where="report", fix="evaluate it on at least one seed")
    row: dict = {"model": model, "seeds": len(results)}
    if len(results) == 1:
        result = results[0]
        stored = result.get("bootstrap") or {}
        intervals = bootstrap_intervals(result, metrics) if result.get("per_user") is not None else stored
        row["interval"] = BOOTSTRAP_OVER_USERS if intervals else NONE
        row["users"] = result.get("users")
        for metric in metrics:
            if metric in result:
                row[metric] = float(result[metric])
                row[f"{metric}_ci"] = list(intervals[metric]) if metric in intervals else None
        return row
    row["interval"] = T_OVER_SEEDS
    for metric in metrics:
        values = [result[metric] for result in results if metric in result]
        if len(values) != len(results):
            continue  # a metric not every seed has is left out rather than averaged over fewer
        mean, sd, low, high = t_interval(values)
        row[metric], row[f"{metric}_std"], row[f"{metric}_ci"] = mean, sd, [low, high]
    return row


def summarise(results_by_model: Mapping[str, Sequence[Mapping]], metrics: Sequence[str] = METRICS) -> list[dict]:
    """A summary row per model (see summarise_model), in the given order."""
    return [summarise_model(model, results, metrics) for model, results in results_by_model.items()]


def _cell(row: Mapping, metric: str) -> str:
    if row.get(metric) is None:
        return "-"
    interval = row.get(f"{metric}_ci")
    if not interval:
        return f"{row[metric]:.4f}"
    return f"{row[metric]:.4f} [{interval[0]:.4f}, {interval[1]:.4f}]"


def markdown_table(rows: Sequence[Mapping], metrics: Sequence[str] = DEFAULT_TABLE) -> str:
    """A Markdown table: a line per summary row, each metric as 'mean [low, high]' (the 95% interval)."""
    unknown = [m for m in metrics if m not in METRIC_TITLES]
    if unknown:
        raise LmadaptError(f"unknown metric(s) {unknown}", where="report", fix=f"choose from {', '.join(METRICS)}")
    head = ["model", "seeds", "interval", *(METRIC_TITLES[m] for m in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [str(row["model"]), str(row["seeds"]), row["interval"], *(_cell(row, m) for m in metrics)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(panels: Mapping[str, Sequence[Mapping]], path: str | Path, metrics: Sequence[str] = DEFAULT_PLOT) -> Path:
    """A PNG with one panel per title in `panels` (its summary rows): a bar per model and metric, the 95% interval
    as error bars (none where a row has no interval)."""
    path = Path(path)
    count = len(panels)
    if not count:
        raise LmadaptError("nothing to plot", where="report", fix="give at least one panel of summary rows")
    columns = min(count, 2)
    lines = (count + columns - 1) // columns
    figure, axes = plt.subplots(lines, columns, figsize=(6.5 * columns, 3.6 * lines), squeeze=False)
    for panel, (title, rows) in zip(axes.flat, panels.items()):
        shown = metrics[title] if isinstance(metrics, Mapping) else metrics
        width = 0.8 / len(shown)
        positions = np.arange(len(rows))
        for offset, metric in enumerate(shown):
            means = np.array([np.nan if row.get(metric) is None else row[metric] for row in rows], dtype=float)
            intervals = [row.get(f"{metric}_ci") or (mean, mean) for mean, row in zip(means, rows)]
            errors = np.abs(np.array([[mean - low, high - mean] for mean, (low, high) in zip(means, intervals)]).T)
            panel.bar(
                positions + (offset - (len(shown) - 1) / 2) * width,
                means,
                width,
                yerr=np.nan_to_num(errors),
                capsize=3,
                label=METRIC_TITLES.get(metric, metric),
            )
        panel.set_xticks(positions, [row["model"] for row in rows], rotation=30, ha="right", fontsize=8)
        panel.set_title(title, fontsize=10)
        panel.legend(fontsize=8)
    for panel in list(axes.flat)[count:]:
        panel.set_visible(False)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def write_report(
    results_by_model: Mapping[str, Sequence[Mapping]],
    folder: str | Path,
    title: str = "Recommendation",
    table: Sequence[str] = DEFAULT_TABLE,
    plotted: Sequence[str] = DEFAULT_PLOT,
) -> dict[str, Path]:
    """Summarise each model's per-seed results and write report.json (every metric: mean, sd, interval),
    report.md (the `table` metrics) and report.png (the `plotted` metrics with intervals) into `folder`; returns the
    paths."""
    rows = summarise(results_by_model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "report.json", "markdown": folder / "report.md", "png": folder / "report.png"}
    document = {"title": title, "confidence": CONFIDENCE, "map_normaliser": "min(R, k)", "models": rows}
    paths["json"].write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    note = (
        f"{int(CONFIDENCE * 100)}% intervals in brackets: t over seeds with two or more seeds, a bootstrap over "
        "users with one. Full ranking, seen items excluded; MAP@k normalised by min(R, k)."
    )
    paths["markdown"].write_text(f"# {title}\n\n{markdown_table(rows, table)}\n\n{note}\n", encoding="utf-8")
    plot({title: rows}, paths["png"], plotted)
    return paths
