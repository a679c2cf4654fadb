"""Scoring alerts against labelled events the way anomaly detection scores them (Merlion's revised point-adjusted
metrics): each labelled event counts once, detected by its first matching alert however long it lasts, and the
time to detect is measured in windows."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from lmadapt.apps.monitor.events import FIRING, AlertEvent
from lmadapt.errors import LmadaptError


@dataclass(frozen=True)
class LabelledEvent:
    """A known event of one topic, e.g. an injected surge: when it ran, and what it was (e.g. {ratio: 3})."""

    topic: str
    start: datetime
    end: datetime
    label: dict | None = None


def _ratio(numerator: int, denominator: int) -> float:
    # 0 where undefined (no alerts, no events), as scikit-learn's zero_division=0.
    return numerator / denominator if denominator else 0.0


def score_alerts(
    alerts: list[AlertEvent],
    events: list[LabelledEvent],
    window_lengths: dict[str, timedelta],
    stream_start: datetime,
    stream_end: datetime,
    control_days: float | None = None,
) -> dict:
    """Precision, recall, F1, delays and false alerts per day of firing alerts against labelled events.

    An alert covers its window [starts_at, starts_at + the window's length) and is raised at the window's end. It
    matches an event of its topic when that window overlaps [event.start, event.end + one window length] (the
    window that closes just after the event still holds its items). Alerts are taken in the order they were raised:
    an alert matching an event not yet detected detects it (a true positive, the earliest such event when it
    overlaps several); an alert matching only events already detected is a duplicate, neither true nor false (a
    second window length or a re-fire after a gap reports the same event, and counting it either way would let the
    number of windows configured move precision); an alert matching no event is a false alert.

    precision = true / (true + false); recall = detected events / events; the delay of a detected event is its
    first alert's window end minus the event's start, in that alert's windows. False alerts per day are over
    control_days when given (e.g. the event-free part of the stream), else over the stream's length. Resolved
    alerts in `alerts` are ignored."""
    if stream_end <= stream_start:
        raise LmadaptError(
            f"the stream ends ({stream_end.isoformat()}) no later than it starts ({stream_start.isoformat()})",
            where="stream_start, stream_end",
            fix="give the first and last times of the stream scored",
        )
    days = control_days if control_days is not None else (stream_end - stream_start) / timedelta(days=1)
    if not days > 0:
        raise LmadaptError(f"control_days must be above 0, got {control_days}", where="control_days", fix="e.g. 7")

    firing = [alert for alert in alerts if alert.status == FIRING]

    def length_of(alert: AlertEvent) -> timedelta:
        if alert.window not in window_lengths:
            raise LmadaptError(
                f"alert window '{alert.window}' has no length",
                where="window_lengths",
                fix="give every window the alerts name: " + ", ".join(sorted({a.window for a in firing})),
            )
        return window_lengths[alert.window]

    raised = sorted(firing, key=lambda alert: (alert.starts_at + length_of(alert), length_of(alert)))
    first_alert: dict[int, AlertEvent] = {}
    matches = [0] * len(events)
    true = duplicates = false = 0
    for alert in raised:
        length = length_of(alert)
        alert_end = alert.starts_at + length
        overlapping = [
            i
            for i, event in enumerate(events)
            if event.topic == alert.topic and alert.starts_at < event.end + length and alert_end > event.start
        ]
        for i in overlapping:
            matches[i] += 1
        undetected = [i for i in overlapping if i not in first_alert]
        if undetected:
            first_alert[min(undetected, key=lambda i: events[i].start)] = alert
            true += 1
        elif overlapping:
            duplicates += 1
        else:
            false += 1

    detail, delays = [], []
    for i, event in enumerate(events):
        alert = first_alert.get(i)
        row = {
            "topic": event.topic,
            "start": event.start.isoformat(),
            "end": event.end.isoformat(),
            "label": event.label,
            "detected": alert is not None,
            "alerts": matches[i],
            "window": None,
            "detected_at": None,
            "delay_windows": None,
        }
        if alert is not None:
            length = length_of(alert)
            delay = (alert.starts_at + length - event.start) / length
            delays.append(delay)
            row.update(window=alert.window, detected_at=(alert.starts_at + length).isoformat(), delay_windows=delay)
        detail.append(row)

    precision, recall = _ratio(true, true + false), _ratio(len(first_alert), len(events))
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "alerts": len(firing),
        "true_alerts": true,
        "duplicate_alerts": duplicates,
        "false_alerts": false,
        "events": len(events),
        "detected": len(first_alert),
        "delay_windows_mean": float(np.mean(delays)) if delays else None,
        "delay_windows_median": float(np.median(delays)) if delays else None,
        "false_alerts_per_day": false / days,
        "days": days,
        "per_event": detail,
    }


def recall_by(
    events: list[LabelledEvent], detected: list[bool], key: Callable[[LabelledEvent], Hashable]
) -> dict[Hashable, dict]:
    """Recall per group of events, e.g. key=lambda e: (e.label["ratio"], e.end - e.start >= timedelta(hours=1)):
    for each key, the events, how many were detected, and the share. `detected` is aligned with `events`, as
    [row["detected"] for row in score_alerts(...)["per_event"]]."""
    if len(detected) != len(events):
        raise LmadaptError(
            f"{len(detected)} detection flags for {len(events)} events",
            where="recall_by",
            fix="pass score_alerts(...)['per_event'] flags for the same events, in the same order",
        )
    groups: dict[Hashable, list[bool]] = {}
    for event, hit in zip(events, detected):
        groups.setdefault(key(event), []).append(bool(hit))
    return {
        group: {"events": len(hits), "detected": sum(hits), "recall": sum(hits) / len(hits)}
        for group, hits in groups.items()
    }


EVENT_COLUMNS = ("topic", "start", "end")


def read_events(path: str) -> list[LabelledEvent]:
    """Labelled events from a CSV, JSONL or Parquet file: topic, start and end (ISO 8601, UTC where no zone is
    given); any other column goes into the event's label (e.g. ratio, minutes)."""
    from zoneinfo import ZoneInfo

    from lmadapt.apps.monitor.pipeline import parse_time
    from lmadapt.data.loading import read_table

    table = read_table(path)
    missing = [name for name in EVENT_COLUMNS if name not in table.frame.columns]
    if missing:
        raise LmadaptError(
            f"the events file has no column '{missing[0]}' (found: {', '.join(map(str, table.frame.columns))})",
            where=path,
            fix="give one row per event with the columns topic, start, end",
        )
    events = []
    for i, row in enumerate(table.frame.to_dict("records")):
        try:
            start, end = (parse_time(row[name], ZoneInfo("UTC")) for name in ("start", "end"))
        except ValueError as error:
            raise LmadaptError(f"{error}", where=table.where_rows([i]), fix="write times as ISO 8601") from None
        label = {key: _number_or_text(value) for key, value in row.items() if key not in EVENT_COLUMNS}
        events.append(LabelledEvent(str(row["topic"]), start, end, label or None))
    return events


def evaluate_monitor(config, events_path: str) -> dict:
    """The monitor's stored alerts scored against the labelled events of `events_path` (see score_alerts), over the
    time range of its stored items."""
    from lmadapt.apps.monitor.store import MonitorStore

    events = read_events(events_path)
    with MonitorStore(config.store_url) as store:
        span = store.time_range()
        if span is None:
            raise LmadaptError(
                "the monitor's store holds no items to score alerts over",
                where=store.where,
                fix="ingest or replay the stream first (lmadapt monitor replay CONFIG --stream FILE)",
            )
        alerts = store.firing_events()
    return score_alerts(alerts, events, config.window_lengths, span[0], span[1])


def _number_or_text(value):
    """A label value as written: a number where it reads as one (files read as text give "1.5")."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return int(number) if number.is_integer() else number
