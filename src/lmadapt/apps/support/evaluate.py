"""A bot replayed over labelled messages (`lmadapt support evaluate`): containment (the share of in-scope messages
answered without a person), accuracy among the answered, escalations by reason, out-of-scope recall, retrieval
Recall@1/@5 and MRR@10 (a known question of the message's intent counts as relevant), and latency per message;
JSON, Markdown, and a PNG of containment against answered accuracy as the thresholds move."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from lmadapt.apps.support.bot import Bot, Messages
from lmadapt.apps.support.knowledge import read_history
from lmadapt.apps.support.policy import REASONS, Signals, figures, frontier, sweep

RETRIEVAL_DEPTH = 10  # MRR@10 reads the ten nearest known questions


def retrieval_metrics(ranked_intents: list[list[str | None]], true_intents: list[str]) -> dict:
    """Recall@1, Recall@5 (a relevant entry among the first k) and MRR@10 (1 / rank of the first relevant entry,
    0 beyond ten) over messages, each given the intents of its retrieved entries best first."""
    ranks = []
    for ranked, truth in zip(ranked_intents, true_intents):
        hits = [i for i, intent in enumerate(ranked[:RETRIEVAL_DEPTH]) if intent == truth]
        ranks.append(hits[0] + 1 if hits else None)
    count = max(len(ranks), 1)
    return {
        "recall_at_1": sum(r is not None and r <= 1 for r in ranks) / count,
        "recall_at_5": sum(r is not None and r <= 5 for r in ranks) / count,
        "mrr_at_10": sum(1 / r for r in ranks if r is not None) / count,
        "messages": len(ranks),
    }


def percentile_ms(seconds: list[float], q: float) -> float | None:
    return round(1000 * float(np.percentile(seconds, q)), 2) if seconds else None


def evaluate_bot(bot: Bot, source: str, output: Path | None = None, progress: bool = False) -> dict:
    """The bot's figures on a labelled file (the history's columns; out-of-scope messages labelled
    history.out_of_scope_label); with `output`, report.json, report.md and containment.png written there."""
    history = bot.config.history
    split = read_history(source, history, answers=False)
    label = history.out_of_scope_label
    messages = Messages(split.texts, [None if intent == label else intent for intent in split.labels])
    # Latency as a customer meets it: one message at a time, reading and deciding.
    latencies, replies, readings = [], [], []
    for text in tqdm(messages.texts, desc="replaying", unit="message", disable=None if progress else True):
        started = time.perf_counter()
        readings += bot.read([text], k=RETRIEVAL_DEPTH)
        replies.append(bot.reply(text, readings[-1]))
        latencies.append(time.perf_counter() - started)
    truth = messages.intents
    in_scope = [i for i, intent in enumerate(truth) if intent is not None]
    answered = np.array([not reply.escalate for reply in replies])
    right = np.array(
        [
            not reply.escalate
            and truth[i] is not None
            and (reply.intent if reply.route == "template" else reply.sources[0]["intent"]) == truth[i]
            for i, reply in enumerate(replies)
        ]
    )
    out_of_scope = np.array([intent is None for intent in truth])
    reasons = [reply.reason for reply in replies]
    report = {
        "bot": bot.name,
        "version": bot.version,
        "data": str(source),
        "messages": len(replies),
        "out_of_scope_messages": int(out_of_scope.sum()),
        "containment": float(answered[~out_of_scope].mean()) if in_scope else None,
        "answered_accuracy": float(right.sum() / answered[~out_of_scope].sum())
        if answered[~out_of_scope].any()
        else None,
        "oos_recall": float(1 - answered[out_of_scope].mean()) if out_of_scope.any() else None,
        "escalations": {reason: reasons.count(reason) / len(reasons) for reason in REASONS},
        "retrieval": retrieval_metrics(
            [[bot.knowledge.intents[entry] for entry, _ in readings[i].neighbours] for i in in_scope],
            [truth[i] for i in in_scope],
        ),
        "latency_ms": {"p50": percentile_ms(latencies, 50), "p95": percentile_ms(latencies, 95)},
        "thresholds": bot.thresholds.to_json(),
    }
    signals = Signals.of(readings, messages.texts, truth, bot.knowledge, bot.config.policy)
    report["at_thresholds"] = figures(signals, bot.thresholds)
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        (output / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        (output / "report.md").write_text(markdown_report(report), encoding="utf-8")
        run_threshold = bot.predictor.ood.threshold if bot.predictor.ood is not None else None
        points = sweep(signals, bot.config.policy, run_threshold)
        plot_containment(frontier(points), report, output / "containment.png")
    return report


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def markdown_report(report: dict) -> str:
    retrieval, latency = report["retrieval"], report["latency_ms"]
    lines = [
        f"# Support bot {report['bot']} (version {report['version']}) on {report['data']}",
        "",
        f"{report['messages']} messages, {report['out_of_scope_messages']} of them out of scope.",
        "",
        "| containment | answered accuracy | out-of-scope recall | Recall@1 | Recall@5 | MRR@10 | p50 ms | p95 ms |",
        "|---|---|---|---|---|---|---|---|",
        f"| {percent(report['containment'])} | {percent(report['answered_accuracy'])} | {percent(report['oos_recall'])} "
        f"| {percent(retrieval['recall_at_1'])} | {percent(retrieval['recall_at_5'])} | {retrieval['mrr_at_10']:.3f} "
        f"| {latency['p50']} | {latency['p95']} |",
        "",
        "| escalation reason | share of messages |",
        "|---|---|",
        *[f"| {reason} | {percent(share)} |" for reason, share in report["escalations"].items()],
        "",
        "Containment: in-scope messages answered without a person. Answered accuracy: answers of the right intent among "
        "the in-scope messages answered. Out-of-scope recall: out-of-scope messages escalated.",
        "",
    ]
    return "\n".join(lines)


def plot_containment(points: list[dict], report: dict, path: Path) -> None:
    """Answered accuracy against containment along the frontier of thresholds, the bot's own marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4.5))
    if points:
        axes.plot(
            [100 * p["containment"] for p in points],
            [100 * p["answered_accuracy"] for p in points],
            marker=".",
            label="thresholds moved",
        )
    if report["containment"] is not None and report["answered_accuracy"] is not None:
        axes.scatter(
            [100 * report["containment"]],
            [100 * report["answered_accuracy"]],
            color="crimson",
            zorder=3,
            label="the bot's thresholds",
        )
    axes.set_xlabel("containment: in-scope messages answered (%)")
    axes.set_ylabel("accuracy of the answered (%)")
    axes.set_title(f"{report['bot']} v{report['version']}: containment against accuracy")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
