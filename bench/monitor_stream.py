"""The monitor benchmark's streams and detectors (issue 22): seeded news streams with injected surges of negative
news, labelled by the models or by the gold labels, scored for lmadapt's detectors and two baselines.

A stream runs `days` days from a Monday 00:00 UTC with `rate` items per simulated minute, evenly spaced. Each item
draws its topic uniformly from the 8 Reuters R8 topics, a story of that topic (its body, from the R8 test split)
and a headline (a Financial PhraseBank 50agree test sentence): negative with the pool's negative share (the base),
or with `ratio` times the base while a surge runs on the item's topic. Surge streams carry `surges` surges (magnitude
1.5x / 2x / 3x x duration 15 / 60 / 240 minutes, cycling through the 9 kinds, on random topics, starting at random
minutes after the first day, never overlapping another surge of their topic); control streams carry none.

Labels: `model` (the sentiment run reads the headline, the topic run the story) or `gold` (the datasets' labels, the
upper bound). Every item counts, also where its texts repeat an earlier item's (the pools hold a few hundred
headlines): the simulation is of events, and the detectors read only the windows' counts. The model labels of each
pool text come from one batch prediction, so every stream is labelled exactly as the monitor would label it.

Detectors, all on the windows of lmadapt's default monitor config (15 min, 1 h, 1 d, aligned on the clock):
- lmadapt: `Detectors` of the monitor with its default detection settings, fed each window's counts the way the
  monitor's pipeline feeds them (every topic, every window, in time order);
- fixed_threshold: a window fires when its negative share is at least a threshold (windows of at least the same
  minimum count as lmadapt's);
- rolling_z: a window fires when its number of negative items is at least a threshold of standard deviations above
  the mean of the topic's previous ROLLING_WINDOWS windows (standard deviation floored at STD_FLOOR items).
A baseline's run of consecutive firing windows is one alert. The baselines' thresholds are set at equal false-alert
rate: the most sensitive threshold of a grid whose false alerts per control day are no more than lmadapt's on the
same control streams and labels.

Scoring (lmadapt.apps.monitor.evaluate.score_alerts, event level): per surge stream, then summed over the streams.
Alerts of windows starting in the first day (the detectors' warm-up; no surge starts there) are dropped for every
detector. False alerts per control day: false alerts on the control streams over their days after the first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

from lmadapt.apps.monitor.config import DetectionConfig, MonitorConfig
from lmadapt.apps.monitor.detect import Detectors
from lmadapt.apps.monitor.evaluate import LabelledEvent, recall_by, score_alerts
from lmadapt.apps.monitor.events import FIRING, NEGATIVE_SHARE_SURGE, AlertEvent, Bucket

STREAM_START = datetime(2026, 1, 5, tzinfo=timezone.utc)  # a Monday 00:00 UTC: every window aligned
RATIOS = (1.5, 2.0, 3.0)
MINUTES = (15, 60, 240)
WARMUP = timedelta(days=1)
ROLLING_WINDOWS = 24
STD_FLOOR = 0.5
FIXED_GRID = np.round(np.arange(0.05, 1.0001, 0.01), 2)
ROLLING_Z_GRID = np.round(np.arange(1.0, 12.0001, 0.1), 1)


@dataclass
class Pools:
    """What streams draw from: headlines with their negative flags (gold and model) and negative scores, stories
    with their topics (gold and model)."""

    negative_gold: np.ndarray  # bool per headline
    negative_model: np.ndarray  # bool per headline
    negative_score: np.ndarray  # the sentiment run's probability of negative per headline
    topics: list[str]  # topic names; topic ids index it
    story_topic_gold: np.ndarray  # topic id per story
    story_topic_model: np.ndarray  # topic id per story

    @property
    def base_share(self) -> float:
        return float(self.negative_gold.mean())


@dataclass
class Stream:
    minutes: np.ndarray  # each item's time, in minutes from the stream's start (float)
    headline: np.ndarray  # headline index per item
    story: np.ndarray  # story index per item
    topic: np.ndarray  # the drawn (gold) topic id per item
    events: list[LabelledEvent]
    days: int
    rate: int

    @property
    def end(self) -> datetime:
        return STREAM_START + timedelta(days=self.days)


def plan_surges(rng: np.random.Generator, topics: list[str], count: int, days: int) -> list[LabelledEvent]:
    """`count` surges cycling through the 9 kinds (shuffled), each on a random topic at a random minute after the
    warm-up, ending before the stream does, with an hour's gap to any other surge of its topic."""
    kinds = [(ratio, minutes) for ratio in RATIOS for minutes in MINUTES]
    order = [kinds[i % len(kinds)] for i in rng.permutation(max(count, len(kinds)))][:count]
    first, last = int(WARMUP / timedelta(minutes=1)), days * 24 * 60
    events: list[LabelledEvent] = []
    for ratio, minutes in order:
        while True:
            topic = topics[int(rng.integers(len(topics)))]
            start = int(rng.integers(first, last - minutes))
            begin, end = STREAM_START + timedelta(minutes=start), STREAM_START + timedelta(minutes=start + minutes)
            gap = timedelta(hours=1)
            if all(e.topic != topic or end + gap <= e.start or e.end + gap <= begin for e in events):
                events.append(LabelledEvent(topic, begin, end, {"ratio": ratio, "minutes": minutes}))
                break
    return sorted(events, key=lambda e: e.start)


def make_stream(pools: Pools, seed: int, rate: int, days: int, surges: int) -> Stream:
    """One seeded stream (see the module's docstring); surges=0 gives a control stream."""
    rng = np.random.default_rng(seed)
    n = rate * days * 24 * 60
    minutes = np.arange(n) / rate
    topic = rng.integers(len(pools.topics), size=n)
    stories_of = [np.flatnonzero(pools.story_topic_gold == t) for t in range(len(pools.topics))]
    story = np.empty(n, dtype=np.int64)
    for t, stories in enumerate(stories_of):
        mine = topic == t
        story[mine] = stories[rng.integers(len(stories), size=int(mine.sum()))]
    events = plan_surges(rng, pools.topics, surges, days) if surges else []
    share = np.full(n, pools.base_share)
    for event in events:
        t = pools.topics.index(event.topic)
        begin, end = ((time - STREAM_START) / timedelta(minutes=1) for time in (event.start, event.end))
        share[(topic == t) & (minutes >= begin) & (minutes < end)] *= event.label["ratio"]
    negatives, others = np.flatnonzero(pools.negative_gold), np.flatnonzero(~pools.negative_gold)
    negative = rng.random(n) < share
    headline = np.where(
        negative, negatives[rng.integers(len(negatives), size=n)], others[rng.integers(len(others), size=n)]
    )
    return Stream(minutes, headline, story, topic, events, days, rate)


@dataclass
class Windows:
    """A labelled stream's counts per window: count, negatives and negative score sum, each [bucket, topic]."""

    name: str
    length: timedelta
    count: np.ndarray
    negatives: np.ndarray
    score_sum: np.ndarray

    def start(self, bucket: int) -> datetime:
        return STREAM_START + bucket * self.length


def stream_labels(stream: Stream, pools: Pools, labels: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each item's topic id, negative flag and negative score under the model's or the gold labels."""
    if labels == "model":
        negative = pools.negative_model[stream.headline]
        return pools.story_topic_model[stream.story], negative, pools.negative_score[stream.headline]
    negative = pools.negative_gold[stream.headline]
    return pools.story_topic_gold[stream.story], negative, negative.astype(float)


def window_counts(stream: Stream, pools: Pools, labels: str, windows: dict[str, timedelta]) -> list[Windows]:
    """Count the stream's items per window and topic, under the model's or the gold labels."""
    topic, negative, score = stream_labels(stream, pools, labels)
    found = []
    topics = len(pools.topics)
    for name, length in windows.items():
        per = length / timedelta(minutes=1)
        buckets = int(np.ceil(stream.days * 24 * 60 / per))
        cell = (stream.minutes // per).astype(np.int64) * topics + topic
        size = buckets * topics
        found.append(
            Windows(
                name,
                length,
                np.bincount(cell, minlength=size).reshape(buckets, topics),
                np.bincount(cell, weights=negative, minlength=size).reshape(buckets, topics).astype(np.int64),
                np.bincount(cell, weights=score, minlength=size).reshape(buckets, topics),
            )
        )
    return found


def lmadapt_alerts(counts: list[Windows], topics: list[str], detection: DetectionConfig) -> list[AlertEvent]:
    """The monitor's detectors on every window of every topic, in time order, as its pipeline feeds them."""
    detectors = Detectors(detection)
    alerts = []
    for windows in counts:
        for b in range(windows.count.shape[0]):
            start = windows.start(b)
            for t in sorted(range(len(topics)), key=lambda t: topics[t]):
                bucket = Bucket(
                    topics[t],
                    windows.name,
                    start,
                    start + windows.length,
                    int(windows.count[b, t]),
                    int(windows.negatives[b, t]),
                    float(windows.score_sum[b, t]),
                )
                alerts += [a for a in detectors.observe(bucket) if a.status == FIRING]
    return alerts


def fixed_threshold_fires(windows: Windows, thresholds: np.ndarray, min_count: int) -> np.ndarray:
    """[threshold, bucket, topic]: the window's negative share is at least the threshold."""
    share = np.divide(windows.negatives, windows.count, out=np.zeros(windows.count.shape), where=windows.count > 0)
    enough = windows.count >= max(min_count, 1)
    return (share[None] >= thresholds[:, None, None] - 1e-12) & enough[None]


def rolling_z_fires(windows: Windows, thresholds: np.ndarray) -> np.ndarray:
    """[threshold, bucket, topic]: the negative count's z-score against the previous ROLLING_WINDOWS windows."""
    x = windows.negatives.astype(float)
    buckets = x.shape[0]
    z = np.full(x.shape, -np.inf)
    for b in range(ROLLING_WINDOWS, buckets):
        past = x[b - ROLLING_WINDOWS : b]
        z[b] = (x[b] - past.mean(axis=0)) / np.maximum(past.std(axis=0), STD_FLOOR)
    return z[None] >= thresholds[:, None, None] - 1e-12


def rising_edges(fires: np.ndarray) -> np.ndarray:
    """[..., bucket, topic] -> where a run of firing windows starts."""
    before = np.zeros_like(fires)
    before[..., 1:, :] = fires[..., :-1, :]
    return fires & ~before


def baseline_alerts(edges: np.ndarray, windows: Windows, topics: list[str], detector: str) -> list[AlertEvent]:
    """One firing alert per run of firing windows (edges: [bucket, topic] for one threshold)."""
    return [
        AlertEvent(FIRING, NEGATIVE_SHARE_SURGE, topics[t], windows.name, detector, windows.start(int(b)))
        for b, t in zip(*np.nonzero(edges))
    ]


def after_warmup(alerts: list[AlertEvent]) -> list[AlertEvent]:
    return [a for a in alerts if a.starts_at >= STREAM_START + WARMUP]


def control_false_alerts(edges_by_window: list[np.ndarray], counts: list[Windows]) -> np.ndarray:
    """False alerts of a control stream for each threshold: every run of firing windows after the warm-up."""
    total = 0
    for edges, windows in zip(edges_by_window, counts):
        first = int(WARMUP / windows.length)
        total = total + edges[:, first:, :].sum(axis=(1, 2))
    return total


def score(streams: list[tuple[Stream, list[AlertEvent]]], windows: dict[str, timedelta]) -> dict:
    """Event-level scores summed over surge streams: precision, recall, F1, delays, recall per surge kind."""
    true = false = detected = events = 0
    delays, flags, all_events = [], [], []
    for stream, alerts in streams:
        found = score_alerts(after_warmup(alerts), stream.events, windows, STREAM_START + WARMUP, stream.end)
        true, false = true + found["true_alerts"], false + found["false_alerts"]
        detected, events = detected + found["detected"], events + found["events"]
        delays += [row["delay_windows"] for row in found["per_event"] if row["detected"]]
        flags += [row["detected"] for row in found["per_event"]]
        all_events += stream.events
    precision = true / (true + false) if true + false else 0.0
    recall = detected / events if events else 0.0
    by_kind = recall_by(all_events, flags, key=lambda e: f"{e.label['ratio']:g}x_{e.label['minutes']}min")
    strong = recall_by(all_events, flags, key=lambda e: e.label["ratio"] == 3 and e.label["minutes"] >= 60)
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "recall_3x_60min": strong.get(True, {}).get("recall"),
        "median_delay_windows": float(np.median(delays)) if delays else None,
        "mean_delay_windows": float(np.mean(delays)) if delays else None,
        "true_alerts": true,
        "false_alerts_surge_streams": false,
        "events": events,
        "detected": detected,
        "recall_by_kind": {kind: round(v["recall"], 4) for kind, v in sorted(by_kind.items())},
    }


def evaluate_detectors(
    pools: Pools, labels: str, surge_streams: list[Stream], control_streams: list[Stream], config: MonitorConfig
) -> list[dict]:
    """Rows for lmadapt and the two baselines (at lmadapt's false-alert rate) on these streams and labels."""
    windows = config.window_lengths
    detection = config.detection
    control_days = sum((s.end - STREAM_START - WARMUP) / timedelta(days=1) for s in control_streams)
    control_counts = [window_counts(s, pools, labels, windows) for s in control_streams]
    surge_counts = [window_counts(s, pools, labels, windows) for s in surge_streams]

    lmadapt_false = sum(len(after_warmup(lmadapt_alerts(c, pools.topics, detection))) for c in control_counts)
    rate = lmadapt_false / control_days
    rows = [
        {
            "detector": "lmadapt",
            "false_alerts_per_day": rate,
            "setting": f"binomial alpha={detection.alpha}, min_count={detection.min_count}, "
            f"min_ratio={detection.min_ratio}, half_life_windows={detection.half_life_windows}",
            **score(
                [(s, lmadapt_alerts(c, pools.topics, detection)) for s, c in zip(surge_streams, surge_counts)], windows
            ),
        }
    ]

    def fires_of(detector: str, w: Windows, grid: np.ndarray) -> np.ndarray:
        if detector == "fixed_threshold":
            return fixed_threshold_fires(w, grid, detection.min_count)
        return rolling_z_fires(w, grid)

    for detector, grid in (("fixed_threshold", FIXED_GRID), ("rolling_z", ROLLING_Z_GRID)):
        per_day = (
            sum(
                control_false_alerts([rising_edges(fires_of(detector, w, grid)) for w in counts], counts)
                for counts in control_counts
            )
            / control_days
        )
        allowed = np.flatnonzero(per_day <= rate + 1e-12)
        i = int(allowed.min()) if allowed.size else len(grid) - 1  # the most sensitive at lmadapt's rate or below
        scored = []
        for stream, counts in zip(surge_streams, surge_counts):
            alerts = []
            for w in counts:
                edges = rising_edges(fires_of(detector, w, grid[i : i + 1]))[0]
                alerts += baseline_alerts(edges, w, pools.topics, detector)
            scored.append((stream, alerts))
        rows.append(
            {
                "detector": detector,
                "false_alerts_per_day": float(per_day[i]),
                "setting": f"threshold={grid[i]:g}"
                + (f", min_count={detection.min_count}" if detector == "fixed_threshold" else "")
                + (f", {ROLLING_WINDOWS} windows, std floor {STD_FLOOR}" if detector == "rolling_z" else ""),
                **score(scored, windows),
            }
        )
    return [{"labels": labels, "control_days": control_days, **row} for row in rows]


class StreamLabels:
    """The monitor's labeller for a simulated stream: item `i` (text "item i") gets the labels the fast path gives
    it. Lets the real pipeline (check, store, aggregates, windows, detectors) run on exactly the fast path's labels."""

    def __init__(self, topic: np.ndarray, negative: np.ndarray, score: np.ndarray, topics: list[str]):
        self.topic, self.negative, self.score, self.topics = topic, negative, score, topics
        self.versions = {"sentiment": "stream", "topic": "stream"}

    def unreadable(self, text: str) -> None:
        return None

    def label(self, texts: list[str]) -> dict[str, list[dict]]:
        index = [int(text.removeprefix("item ")) for text in texts]
        sentiment = [
            {"label": "negative" if self.negative[i] else "other", "scores": {"negative": float(self.score[i])}}
            for i in index
        ]
        topic = [{"label": self.topics[self.topic[i]], "scores": {}} for i in index]
        return {"sentiment": sentiment, "topic": topic}


def pipeline_agreement(stream: Stream, pools: Pools, labels: str, config: MonitorConfig, store_url: str) -> dict:
    """Feed the stream through the monitor's own pipeline (Monitor.ingest in batches into a real store) and compare
    its firing alerts with the fast path's on the windows the pipeline has tested."""
    from lmadapt.apps.monitor.pipeline import Monitor
    from lmadapt.apps.monitor.store import MonitorStore

    topic, negative, score = stream_labels(stream, pools, labels)
    started = time.perf_counter()
    with MonitorStore(store_url) as store:
        monitor = Monitor(config, store, labeller=StreamLabels(topic, negative, score, pools.topics))
        batch = config.ingest.batch_size * 8
        for first in range(0, len(stream.minutes), batch):
            records = [
                {"text": f"item {i}", "time": (STREAM_START + timedelta(minutes=float(stream.minutes[i]))).isoformat()}
                for i in range(first, min(first + batch, len(stream.minutes)))
            ]
            monitor.ingest(records, "stream", str(first))
        piped = {(a.alertname, a.topic, a.window, a.starts_at) for a in store.firing_events()}
        tested = dict(monitor.tested_until)
    seconds = time.perf_counter() - started
    fast = {
        (a.alertname, a.topic, a.window, a.starts_at)
        for a in lmadapt_alerts(
            window_counts(stream, pools, labels, config.window_lengths), pools.topics, config.detection
        )
        if a.window in tested and a.starts_at < tested[a.window]
    }
    return {
        "labels": labels,
        "items": len(stream.minutes),
        "pipeline_alerts": len(piped),
        "fast_path_alerts": len(fast),
        "agree": piped == fast,
        "only_pipeline": len(piped - fast),
        "only_fast_path": len(fast - piped),
        "pipeline_s": round(seconds, 1),
    }
