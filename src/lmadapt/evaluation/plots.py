"""PNG plots next to the tables."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lmadapt.data.labels import MULTI_LABEL, LabelMap  # noqa: E402


def plot_confusion_matrix(matrix: list[list[int]], labels: list[str], path: Path, title: str) -> None:
    """Row-normalised confusion matrix; counts written in the cells when there are few classes."""
    counts = np.asarray(matrix)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = min(4 + 0.25 * len(labels), 24)
    figure, axes = plt.subplots(figsize=(size, size * 0.85))
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of true class")
    ticks = np.arange(len(labels))
    font = 9 if len(labels) <= 20 else 5
    axes.set_xticks(ticks, labels, rotation=90 if len(labels) > 6 else 0, fontsize=font)
    axes.set_yticks(ticks, labels, fontsize=font)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    if len(labels) <= 20:
        for i in range(len(labels)):
            for j in range(len(labels)):
                colour = "white" if shares[i, j] > 0.5 else "black"
                axes.text(j, i, str(counts[i, j]), ha="center", va="center", color=colour, fontsize=font)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def plot_per_label_f1(per_class: dict, path: Path, title: str) -> None:
    """Bar chart of per-label F1 (the multi-label counterpart of a confusion matrix)."""
    names = list(per_class)
    values = [per_class[n]["f1"] for n in names]
    figure, axes = plt.subplots(figsize=(max(5, 0.35 * len(names)), 4))
    axes.bar(range(len(names)), values, color="#3b75af")
    axes.set_xticks(range(len(names)), names, rotation=90, fontsize=8)
    axes.set_ylim(0, 1)
    axes.set_ylabel("F1")
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def plot_training_curves(log_history: list[dict], path: Path, title: str) -> None:
    """Training loss per step and validation macro-F1 per epoch."""
    train = [(e["step"], e["loss"]) for e in log_history if "loss" in e and "step" in e]
    evals = [(e["step"], e["eval_macro_f1"]) for e in log_history if "eval_macro_f1" in e]
    figure, loss_axes = plt.subplots(figsize=(6, 4))
    if train:
        loss_axes.plot(*zip(*train), color="#3b75af", label="training loss")
    loss_axes.set_xlabel("step")
    loss_axes.set_ylabel("training loss")
    if evals:
        f1_axes = loss_axes.twinx()
        f1_axes.plot(*zip(*evals), "o-", color="#d1603d", label="validation macro-F1")
        f1_axes.set_ylabel("validation macro-F1")
        f1_axes.set_ylim(0, 1)
    loss_axes.set_title(title)
    figure.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def write_metric_plots(folder: Path, metrics: dict, labels: LabelMap, title: str) -> None:
    """confusion.png: the confusion matrix (single-label) or per-label F1 bars (multi-label)."""
    if labels.task == MULTI_LABEL:
        plot_per_label_f1(metrics["per_class"], folder / "confusion.png", f"{title}: per-label F1")
    else:
        plot_confusion_matrix(metrics["confusion_matrix"], labels.labels, folder / "confusion.png", title)


def plot_shots_curve(summary: list[dict], path: Path, title: str) -> None:
    """Accuracy (mean ± std over seeds) against shots per class, one line per strategy; runs without
    shots (zero-shot, full fine-tuning on all labels) as horizontal reference lines."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    curves: dict[str, list[dict]] = {}
    for row in summary:
        if row["accuracy"] is None:
            continue
        if row["shots"]:
            curves.setdefault(row["strategy"], []).append(row)
        else:
            label = f"{row['strategy']} ({'zero-shot' if row['shots'] == 0 else 'all labels'})"
            axes.axhline(100 * row["accuracy"], linestyle="--", linewidth=1, label=label, color=None)
    for strategy, rows in curves.items():
        rows.sort(key=lambda r: r["shots"])
        axes.errorbar(
            [r["shots"] for r in rows],
            [100 * r["accuracy"] for r in rows],
            yerr=[100 * r["accuracy_std"] for r in rows],
            marker="o",
            capsize=3,
            label=strategy,
        )
    if curves:
        axes.set_xscale("log", base=2)
        shots = sorted({r["shots"] for rows in curves.values() for r in rows})
        axes.set_xticks(shots, [str(s) for s in shots])
    axes.set_xlabel("shots per class")
    axes.set_ylabel("accuracy (%)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def plot_accuracy_matrix(matrix: list[list[float]], names: list[str], path: Path, title: str) -> None:
    """Continual learning: accuracy on each experience (columns) after learning each (rows), in %."""
    values = 100 * np.asarray(matrix, dtype=float)
    size = 3 + 0.7 * len(names)
    figure, axes = plt.subplots(figsize=(size + 1, size * 0.8))
    image = axes.imshow(values, cmap="viridis", vmin=0, vmax=100)
    figure.colorbar(image, ax=axes, fraction=0.046, label="accuracy (%)")
    axes.set_xticks(np.arange(len(names)), names, rotation=30, ha="right", fontsize=8)
    axes.set_yticks(np.arange(len(values)), [f"after {names[i]}" for i in range(len(values))], fontsize=8)
    axes.set_xlabel("evaluated on")
    axes.set_title(title)
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if np.isnan(values[i, j]):
                continue  # never measured
            axes.text(
                j,
                i,
                f"{values[i, j]:.1f}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if values[i, j] < 60 else "black",
            )
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def plot_stream_comparison(results: list[dict], path: Path, title: str) -> None:
    """Continual learning, one entry per method: mean accuracy on the experiences seen so far after each
    step (left), and final average accuracy beside forgetting (right)."""
    figure, (curve, bars) = plt.subplots(1, 2, figsize=(11, 4.2))
    steps = max(len(r["average_accuracy_by_step"]) for r in results)
    for result in results:
        by_step = result["average_accuracy_by_step"]
        if len(by_step) == 1 and steps > 1:  # joint learns every experience in one step: a level to compare with
            curve.axhline(
                100 * result["average_accuracy"],
                linestyle="--",
                color="gray",
                label=f"{result['method']} (all at once)",
            )
        else:
            curve.plot(range(1, len(by_step) + 1), [100 * v for v in by_step], marker="o", label=result["method"])
    curve.set_xticks(range(1, steps + 1))
    curve.set_xlabel("experiences learned")
    curve.set_ylabel("accuracy on those seen (%)")
    curve.grid(alpha=0.3)
    curve.legend(fontsize=8)
    positions = np.arange(len(results))
    bars.bar(positions - 0.2, [100 * r["average_accuracy"] for r in results], 0.4, label="average accuracy")
    bars.bar(positions + 0.2, [100 * (r["forgetting"] or 0.0) for r in results], 0.4, label="forgetting")
    bars.set_xticks(positions, [r["method"] for r in results])
    bars.set_ylabel("points")
    bars.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def plot_quality_against_cost(rows: list[dict], cost: str, label: str, front_flag: str, path: Path, title: str) -> None:
    """Accuracy against a cost (one point per finished strategy, named), the Pareto front drawn through
    the points that no other beats on both; a log scale when the costs span two decades."""
    done = [r for r in rows if r.get(front_flag) is not None]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    xs, ys = [max(r[cost], 1e-6) for r in done], [100 * r["accuracy"] for r in done]
    axes.scatter(xs, ys, color="tab:blue", zorder=2)
    for row, x, y in zip(done, xs, ys):
        axes.annotate(row["strategy"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    front = sorted((x, y) for row, x, y in zip(done, xs, ys) if row[front_flag])
    if front:
        axes.plot(*zip(*front), color="tab:red", marker="o", label="Pareto front", zorder=3)
        axes.legend(fontsize=8)
    if xs and max(xs) / min(xs) >= 100:
        axes.set_xscale("log")
    axes.set_xlabel(label)
    axes.set_ylabel("accuracy (%)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
