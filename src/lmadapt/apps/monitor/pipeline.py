"""The monitor's pipeline: items come in (files, stdin, HTTP), each is checked on its own (a bad one is rejected
with its reason, never stopping the stream), the good ones are labelled in batches by the runs and stored with
their windows' aggregates; then the windows that have closed are tested by the detectors and their alerts sent.

A window closes when the newest item time seen has passed its end by ingest.allowed_lateness. The detectors'
state and the alerts they raise are stored together, so a restart goes on from the last tested window.
"""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import lmadapt
from lmadapt.apps.monitor.config import MonitorConfig, parse_window
from lmadapt.apps.monitor.events import Bucket
from lmadapt.apps.monitor.sources import Unreadable
from lmadapt.apps.monitor.store import Item, MonitorStore, Reject, utc
from lmadapt.errors import LmadaptError

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
DETECTION_STATE = "detection"
ALL_TOPICS = "all"  # the one topic of a monitor whose items carry none


def window_start(time: datetime, length: timedelta) -> datetime:
    """The start of the window of `length` holding `time` (windows are aligned on 1970-01-01 UTC)."""
    return EPOCH + ((time - EPOCH) // length) * length


def content_hash(text: str) -> str:
    """An item's identity: its text, Unicode-normalised and with its whitespace collapsed."""
    normal = " ".join(unicodedata.normalize("NFKC", text).split())
    return hashlib.sha256(normal.encode("utf-8")).hexdigest()


def parse_time(value, zone: ZoneInfo) -> datetime:
    """An item's time in UTC: ISO 8601 (a time without a zone is in `zone`) or seconds since 1970; ValueError
    naming what was wrong otherwise."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"unparsable time {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"unparsable time {value!r}")
        return datetime.fromtimestamp(value, tz=timezone.utc)
    if isinstance(value, datetime):
        parsed = value
    else:
        text = str(value).strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            try:
                return datetime.fromtimestamp(float(text), tz=timezone.utc)
            except (ValueError, OverflowError, OSError):
                raise ValueError(
                    f"unparsable time {text[:40]!r} (ISO 8601, e.g. 2026-12-02T09:30:00Z, or seconds since 1970)"
                ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return parsed.astimezone(timezone.utc)


def model_version(run) -> str:
    """A run's name and the first digits of its manifest's hash: which model labelled an item."""
    manifest = run.path / "manifest.json"
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()[:12] if manifest.is_file() else "unsigned"
    return f"{run.name}@{digest}"


@dataclass
class Checked:
    """An item that passed the checks, before labelling."""

    text: str
    time: datetime
    topic: str | None  # from the input's topic field
    fields: dict
    content_hash: str


class Labeller:
    """The runs that label every item, loaded once on the config's inference path."""

    def __init__(self, config: MonitorConfig):
        labels = config.labels
        self.runs = {name: lmadapt.load(path) for name, path in (labels.runs or {}).items()}
        self.predictors = {
            name: run.inference(labels.backend, batch_size=labels.batch_size) for name, run in self.runs.items()
        }
        self.versions = {name: model_version(run) for name, run in self.runs.items()}

    def unreadable(self, text: str) -> str | None:
        """Why a run cannot read this text (its language guard), or None."""
        for name, run in self.runs.items():
            try:
                run.check_reads([text], "the item")
            except LmadaptError as error:
                return f"{name}: {error.what}"
        return None

    def label(self, texts: list[str]) -> dict[str, list[dict]]:
        """Each run's label and label scores of each text, by run name. The texts were checked one by one (a
        batch is not refused as a whole for a few texts the guard would not read)."""
        found = {}
        for name, predictor in self.predictors.items():
            predicted = predictor.predictions(texts, abstain=False)
            labels = predictor.labels.labels
            found[name] = [
                {"label": label, "scores": {label_name: float(p) for label_name, p in zip(labels, row)}}
                for label, row in zip(predicted.labels, predicted.scores)
            ]
        return found


@dataclass
class IngestReport:
    """What one call of `Monitor.ingest` did."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    late: int = 0  # stored, but their window had been tested already
    alerts: list = field(default_factory=list)
    rejects: list = field(default_factory=list)  # (position, reason) of each rejected record

    def add(self, other: IngestReport) -> None:
        for name in ("received", "stored", "duplicates", "rejected", "late"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.alerts += other.alerts
        self.rejects += other.rejects


class Monitor:
    """A monitor on its store: `ingest` batches of records (dicts with the config's fields), `detect` the closed
    windows. `dispatch(alert_id, body)` hands each new alert to the receivers."""

    def __init__(self, config: MonitorConfig, store: MonitorStore, labeller: Labeller | None = None, detectors=None):
        from lmadapt.apps.monitor.detect import Detectors

        self.config = config
        self.store = store
        self.labeller = labeller or Labeller(config)
        self.windows = config.window_lengths
        self.lateness = parse_window(config.ingest.allowed_lateness, "ingest.allowed_lateness", timedelta(0))
        self.zone = ZoneInfo(config.input.timezone)
        saved = store.load_state(DETECTION_STATE) or {}
        self.detectors = detectors or Detectors(config.detection, config.alerts.severity, saved.get("detectors"))
        self.newest = datetime.fromisoformat(saved["newest"]) if saved.get("newest") else None
        self.tested_until = {w: datetime.fromisoformat(t) for w, t in saved.get("tested_until", {}).items()}
        self.dispatch: Callable[[int, dict], None] | None = None

    # -- ingest --------------------------------------------------------------------------------------------------

    def check(self, record: dict) -> Checked | str:
        """The record as an item, or why it is rejected."""
        fields = self.config.input
        if isinstance(record, Unreadable):
            return record.reason
        if not isinstance(record, dict):
            return "not a record (a JSON object or a table row)"
        text = record.get(fields.text_field)
        if text is None or (isinstance(text, float) and math.isnan(text)) or not str(text).strip():
            return f"missing text (field '{fields.text_field}')"
        text = str(text)
        if len(text) > fields.max_chars:
            return f"text of {len(text)} characters, over the limit of {fields.max_chars} (input.max_chars)"
        raw_time = record.get(fields.time_field)
        if raw_time is None or (isinstance(raw_time, float) and math.isnan(raw_time)) or raw_time == "":
            return f"missing time (field '{fields.time_field}')"
        try:
            time = parse_time(raw_time, self.zone)
        except ValueError as error:
            return str(error)
        topic = None
        if fields.topic_field:
            topic = record.get(fields.topic_field)
            if topic is None or not str(topic).strip():
                return f"missing topic (field '{fields.topic_field}')"
            topic = str(topic)
        kept = {name: record.get(name) for name in [fields.id_field, *(fields.keep_fields or [])] if name}
        unreadable = self.labeller.unreadable(text)
        if unreadable:
            return unreadable
        return Checked(text, time, topic, _jsonable(kept), content_hash(text))

    def ingest(self, records: Sequence, source: str, position: str | None = None) -> IngestReport:
        """Check, label and store a batch of records from `source` (and where it stopped, `position`, in the same
        transaction), then test the windows that closed. Bad records are rejected one by one."""
        report = IngestReport(received=len(records))
        checked, rejected = [], []
        seen: set[str] = set()
        for i, record in enumerate(records):
            found = self.check(record)
            if isinstance(found, str):
                rejected.append(Reject(f"{position}#{i}" if position is not None else str(i), found, _raw(record)))
            elif found.content_hash in seen:
                report.duplicates += 1
            else:
                seen.add(found.content_hash)
                checked.append(found)
        known = self.store.known_hashes([c.content_hash for c in checked])
        fresh = [c for c in checked if c.content_hash not in known]
        report.duplicates += len(checked) - len(fresh)
        items = self._labelled(fresh)
        report.stored = self.store.add(items, rejected, source, position, self.windows, window_start)
        report.rejected = len(rejected)
        report.rejects = [(reject.position, reject.reason) for reject in rejected]
        report.late = sum(self._is_late(item.time) for item in items)
        if items:
            newest = max(item.time for item in items)
            self.newest = newest if self.newest is None else max(self.newest, newest)
        report.alerts = self.detect()
        return report

    def _labelled(self, checked: list[Checked]) -> list[Item]:
        if not checked:
            return []
        labels = self.config.labels
        found = self.labeller.label([c.text for c in checked])
        negative = set(self.config.negative_labels)
        items = []
        for i, c in enumerate(checked):
            sentiment = found[labels.sentiment][i]
            topic = c.topic or (found[labels.topic][i]["label"] if labels.topic in found else ALL_TOPICS)
            items.append(
                Item(
                    content_hash=c.content_hash,
                    time=c.time,
                    text=c.text,
                    topic=str(topic),
                    sentiment=sentiment["label"],
                    negative=sentiment["label"] in negative,
                    negative_score=float(sum(p for label, p in sentiment["scores"].items() if label in negative)),
                    labels={name: results[i]["label"] for name, results in found.items()},
                    scores={name: results[i]["scores"] for name, results in found.items()},
                    models=dict(self.labeller.versions),
                    fields=c.fields,
                )
            )
        return items

    def _is_late(self, time: datetime) -> bool:
        shortest, length = next(iter(self.windows.items()))
        tested = self.tested_until.get(shortest)
        return tested is not None and window_start(time, length) < tested

    # -- detection -----------------------------------------------------------------------------------------------

    def detect(self) -> list:
        """Test every window that has closed since the last call; store the detectors' state with the alerts they
        raised; hand the new alerts to `dispatch`. Returns the alert events."""
        if self.newest is None:
            return []
        watermark = self.newest - self.lateness
        events = []
        for window, length in self.windows.items():
            end = window_start(watermark, length)  # windows starting before this one have closed
            start = self.tested_until.get(window)
            if start is None:
                first = self.store.first_window(window)
                if first is None:
                    continue
                start = first
            if end <= start:
                continue
            events += self._test_windows(window, length, start, end)
            self.tested_until[window] = end
        self._save(events)
        return events

    def _test_windows(self, window: str, length: timedelta, start: datetime, end: datetime) -> list:
        counts = {
            (row["start"], row["topic"]): row
            for row in self.store.window_counts(window, start, end, self.config.negative_labels)
        }
        events = []
        seen_topics = set(self.store.topics_before(window, start))
        moment = start
        while moment < end:
            seen_topics |= {topic for (at, topic) in counts if at == moment}
            for topic in sorted(seen_topics):  # every topic seen so far, with or without items in this window
                row = counts.get((moment, topic), {"count": 0, "negatives": 0, "score_sum": 0.0})
                bucket = Bucket(
                    topic, window, moment, moment + length, row["count"], row["negatives"], row["score_sum"]
                )
                events += self.detectors.observe(bucket)
            moment += length
        return events

    def _save(self, events: list) -> None:
        from lmadapt.apps.monitor.alerts import alertmanager_body

        config = self.config
        rows = []
        for event in events:
            end = event.ends_at or (event.starts_at + self.windows[event.window])
            examples = self.store.examples(event.topic, event.starts_at, end, config.alerts.examples)
            body = alertmanager_body(
                [event],
                receiver=config.name,
                group_key=f"{config.name}/{event.fingerprint}",
                external_url=config.alerts.external_url,
                examples={event.fingerprint: examples},
            )
            rows.append(
                {
                    "fingerprint": event.fingerprint,
                    "status": event.status,
                    "alertname": event.alertname,
                    "topic": event.topic,
                    "window": event.window,
                    "severity": event.severity,
                    "starts_at": event.starts_at,
                    "ends_at": event.ends_at,
                    "values": _jsonable(event.values),
                    "examples": examples,
                    "body": body,
                }
            )
        state = {
            "detectors": self.detectors.state(),
            "newest": self.newest.isoformat() if self.newest else None,
            "tested_until": {w: t.isoformat() for w, t in self.tested_until.items()},
        }
        ids = self.store.save_detection(DETECTION_STATE, state, rows)
        if self.dispatch is not None:
            for alert_id, row in zip(ids, rows):
                if alert_id is not None:
                    self.dispatch(alert_id, row["body"])


def _raw(record) -> str:
    if isinstance(record, Unreadable):
        return record.raw
    try:
        return json.dumps(_jsonable(record), ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(record)


def _jsonable(value):
    """Plain JSON values: numpy and pandas scalars as Python ones, NaN as None, times as ISO 8601."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, datetime):
        return utc(value).isoformat()
    if hasattr(value, "item"):  # numpy scalar
        return _jsonable(value.item())
    return value


def ingest_source(
    config: MonitorConfig,
    source: str,
    *,
    follow: bool = False,
    stop: Callable[[], bool] = lambda: False,
    progress: Callable[[str], None] = print,
) -> IngestReport:
    """Feed a file (or `-`: JSON lines on stdin) through the monitor, from where this source stopped last time;
    `follow`: keep reading the file as it grows until `stop()`. Alerts go to the config's receivers."""
    import sys
    from pathlib import Path

    from lmadapt.apps.monitor.alerts import AlertDispatcher, receivers_from
    from lmadapt.apps.monitor.sources import file_batches, followed_batches, stream_batches

    batch_size = config.ingest.batch_size
    total = IngestReport()
    with MonitorStore(config.store_url) as store:
        monitor = Monitor(config, store)
        dispatcher = AlertDispatcher(receivers_from(config.alerts), config.alerts, store.record_delivery)
        for alert_id, body in store.undelivered():  # raised before a stop, not yet delivered
            dispatcher.submit(alert_id, body)
        monitor.dispatch = dispatcher.submit
        try:
            if source == "-":
                name, batches = "stdin", stream_batches(sys.stdin, batch_size, config.ingest.poll_s)
            else:
                path = Path(source)
                if not path.is_file():
                    raise LmadaptError(f"input file not found: {path}", fix="check the path, or give - for stdin")
                name = str(path.resolve())
                start = store.position(name)
                fmt = config.input.format
                batches = (
                    followed_batches(path, fmt, batch_size, start, config.ingest.poll_s, stop)
                    if follow
                    else file_batches(path, fmt, batch_size, start)
                )
                if start is not None:
                    progress(f"resuming {name} at {start}")
            for records, position in batches:
                report = monitor.ingest(records, name, position)
                total.add(report)
                progress(
                    f"{total.received} items read: {total.stored} stored, {total.duplicates} duplicates, "
                    f"{total.rejected} rejected, {len(total.alerts)} alerts"
                )
                if stop():
                    break
        finally:
            dispatcher.close(timeout=config.alerts.timeout_s * (config.alerts.retries + 1))
    return total
