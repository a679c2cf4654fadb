"""Alert delivery: the Prometheus Alertmanager webhook body (version 4) built from alert events, the receivers that
take it (webhook, log file, console), and delivery with retries and backoff from background threads, so that a slow
or dead receiver never holds up ingest."""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import httpx

from lmadapt.apps.monitor.config import AlertsConfig
from lmadapt.apps.monitor.events import FIRING, NEGATIVE_SHARE_SURGE, RESOLVED, VOLUME_SPIKE, AlertEvent
from lmadapt.errors import LmadaptError

log = logging.getLogger(__name__)

WEBHOOK_VERSION = "4"
# Go's zero time, which Alertmanager sends as the endsAt of an alert still firing.
ZERO_TIME = "0001-01-01T00:00:00Z"
# The labels a group is keyed by (Alertmanager's group_by): the monitor sends each event on its own as it happens,
# so a group is one alert of one topic in one window.
GROUP_BY = ("alertname", "topic", "window")
# Annotations that hold a measured value, in the order a reader wants them; other values follow.
VALUE_ANNOTATIONS = ("negative_share", "baseline", "z")


class DeliveryError(Exception):
    """A receiver did not take a body (an HTTP error status, no answer, a write that failed)."""


def _utc(moment: datetime) -> datetime:
    """A time in UTC; one without a zone is UTC already, as the monitor's times are."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def rfc3339(moment: datetime) -> str:
    """A time in RFC 3339 UTC as Alertmanager writes it: Z, and fractional seconds only where there are some."""
    moment = _utc(moment)
    timespec = "microseconds" if moment.microsecond else "seconds"
    return moment.replace(tzinfo=None).isoformat(timespec=timespec) + "Z"


def _when(moment: datetime) -> str:
    return _utc(moment).strftime("%Y-%m-%d %H:%M UTC")


def _percent(share: float) -> str:
    return f"{100 * share:.0f}%"


def alert_summary(event: AlertEvent) -> str:
    """One sentence a person reads in a chat message or on the console: what surged, where, when, against what."""
    values = event.values
    if event.alertname == VOLUME_SPIKE and "count" in values:
        sentence = (
            f"{values['count']} items on {event.topic} in the {event.window} window from {_when(event.starts_at)}"
        )
        expected = values.get("expected_count")
        if expected:
            sentence += f", {values['count'] / expected:.1f}x the {expected:.0f} expected"
    elif "negative_share" in values:
        sentence = (
            f"Negative news on {event.topic} at {_percent(values['negative_share'])} in the {event.window} window "
            f"from {_when(event.starts_at)}"
        )
        baseline = values.get("baseline")
        if baseline:
            sentence += f", {values['negative_share'] / baseline:.1f}x the {_percent(baseline)} baseline"
        elif baseline is not None:
            sentence += ", against a 0% baseline"
    else:
        what = "Negative news surge" if event.alertname == NEGATIVE_SHARE_SURGE else event.alertname
        sentence = f"{what} on {event.topic} in the {event.window} window from {_when(event.starts_at)}"
    if event.status == RESOLVED:
        ended = f"; the event ended {_when(event.ends_at)}" if event.ends_at is not None else ""
        sentence = f"Resolved: {sentence}{ended}"
    return sentence


def _annotation_value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _annotations(event: AlertEvent, examples: list[str] | None) -> dict[str, str]:
    annotations = {"summary": alert_summary(event)}
    for key in VALUE_ANNOTATIONS:
        if key in event.values:
            annotations[key] = _annotation_value(event.values[key])
    for key, value in event.values.items():
        annotations.setdefault(key, _annotation_value(value))
    if examples:
        annotations["examples"] = "\n".join(examples)
    return annotations


def _generator_url(external_url: str | None, event: AlertEvent) -> str:
    """The dashboard, opened on the alert's topic and window."""
    if not external_url:
        return ""
    return str(httpx.URL(external_url).copy_merge_params({"topic": event.topic, "window": event.window}))


def _common(mappings: list[dict[str, str]]) -> dict[str, str]:
    """The pairs every mapping has (Alertmanager's commonLabels and commonAnnotations)."""
    shared = dict(mappings[0])
    for mapping in mappings[1:]:
        shared = {key: value for key, value in shared.items() if mapping.get(key) == value}
    return shared


def alertmanager_body(
    events: list[AlertEvent],
    *,
    receiver: str,
    group_key: str,
    external_url: str | None,
    examples: dict[str, list[str]] | None = None,
) -> dict:
    """The JSON body Alertmanager's webhook receiver sends (version 4) for a group of alert events.

    `examples` maps an event's fingerprint to headlines shown with it. The body's status is firing when any alert
    fires, as Alertmanager's is; a firing alert's endsAt is Go's zero time, a resolved one's the end of its event."""
    if not events:
        raise ValueError("an alert body needs at least one event")
    alerts = []
    for event in events:
        if event.status not in (FIRING, RESOLVED):
            raise ValueError(f"alert status must be {FIRING} or {RESOLVED}, got {event.status!r}")
        if event.status == RESOLVED and event.ends_at is None:
            raise ValueError(f"the resolved event {event.fingerprint} has no ends_at")
        alerts.append(
            {
                "status": event.status,
                "labels": event.labels,
                "annotations": _annotations(event, (examples or {}).get(event.fingerprint)),
                "startsAt": rfc3339(event.starts_at),
                "endsAt": rfc3339(event.ends_at) if event.status == RESOLVED else ZERO_TIME,
                "generatorURL": _generator_url(external_url, event),
                "fingerprint": event.fingerprint,
            }
        )
    common_labels = _common([alert["labels"] for alert in alerts])
    return {
        "version": WEBHOOK_VERSION,
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": FIRING if any(alert["status"] == FIRING for alert in alerts) else RESOLVED,
        "receiver": receiver,
        "groupLabels": {key: common_labels[key] for key in GROUP_BY if key in common_labels},
        "commonLabels": common_labels,
        "commonAnnotations": _common([alert["annotations"] for alert in alerts]),
        "externalURL": external_url or "",
        "alerts": alerts,
    }


class Receiver(Protocol):
    """Where alert bodies go. `send` returns once the body is taken and raises when it is not."""

    name: str

    def send(self, body: dict) -> None: ...


class WebhookReceiver:
    """POSTs each body as JSON to an Alertmanager-compatible webhook; a non-2xx answer or no answer is a failure."""

    name = "webhook"

    def __init__(self, url: str, timeout_s: float):
        self.url = url
        self.timeout_s = timeout_s

    def send(self, body: dict) -> None:
        try:
            response = httpx.post(self.url, json=body, timeout=self.timeout_s)
        except httpx.TimeoutException as error:
            raise DeliveryError(f"no answer from {self.url} within {self.timeout_s:g} s") from error
        except httpx.HTTPError as error:
            raise DeliveryError(f"could not reach {self.url}: {error}") from error
        if not response.is_success:
            raise DeliveryError(f"{self.url} answered HTTP {response.status_code} {response.reason_phrase}")


class LogFileReceiver:
    """Appends each body as one JSON line, flushed and synced to disk, so an alert that was sent is never lost."""

    name = "log_file"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def send(self, body: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(body, ensure_ascii=False) + "\n")
            file.flush()
            os.fsync(file.fileno())


class StdoutReceiver:
    """Writes one short line per alert: status, alert, topic, window and the summary."""

    name = "stdout"

    def __init__(self, write: Callable[[str], object] = print):
        self.write = write

    def send(self, body: dict) -> None:
        for alert in body["alerts"]:
            labels = alert["labels"]
            self.write(
                f"[{alert['status'].upper()}] {labels['alertname']} {labels['topic']} {labels['window']}: "
                f"{alert['annotations']['summary']}"
            )


def receivers_from(config: AlertsConfig) -> list[Receiver]:
    """The receivers an alerts config names: the webhook, the log file, the console, each where set."""
    receivers: list[Receiver] = []
    if config.webhook_url:
        try:
            url = httpx.URL(config.webhook_url)
        except httpx.InvalidURL:
            url = None
        if url is None or url.scheme not in ("http", "https") or not url.host:
            raise LmadaptError(
                f"'{config.webhook_url}' is not an http(s) address",
                where="alerts.webhook_url",
                fix="give the receiver's full address, e.g. alerts.webhook_url=http://127.0.0.1:5001/alerts, "
                "or leave it empty for no webhook",
            )
        if not config.timeout_s > 0:
            raise LmadaptError(
                f"alerts.timeout_s must be above 0, got {config.timeout_s}", where="alerts.timeout_s", fix="e.g. 5"
            )
        receivers.append(WebhookReceiver(config.webhook_url, config.timeout_s))
    if config.log_file:
        receivers.append(LogFileReceiver(config.log_file))
    if config.stdout:
        receivers.append(StdoutReceiver())
    return receivers


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


def deliver(
    body: dict,
    receiver: Receiver,
    *,
    retries: int,
    backoff_s: float,
    max_backoff_s: float,
    record: Callable[[dict], None],
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Send a body to one receiver: up to 1 + retries attempts, waiting backoff_s, then twice that, and so on up to
    max_backoff_s, between them. Every attempt is passed to `record` as {receiver, attempt, ok, error, at}. Returns
    whether the body was delivered; a receiver's failure is recorded, never raised."""
    wait = backoff_s
    for attempt in range(1, retries + 2):
        at = rfc3339(datetime.now(timezone.utc))
        try:
            receiver.send(body)
        except Exception as error:
            record({"receiver": receiver.name, "attempt": attempt, "ok": False, "error": _describe(error), "at": at})
        else:
            record({"receiver": receiver.name, "attempt": attempt, "ok": True, "error": None, "at": at})
            return True
        if attempt <= retries:
            sleep(min(wait, max_backoff_s))
            wait *= 2
    return False


class _GaveUp(Exception):
    """Raised in a delivery thread's backoff wait once the dispatcher has given up on its queue."""


_STOP = object()


class AlertDispatcher:
    """Delivers alert bodies to every receiver from background threads, one thread and queue per receiver: `submit`
    returns at once, a slow or dead webhook delays only itself, and the log file and console still get every alert.

    `record` receives every attempt as {alert_id, receiver, attempt, ok, error, at}, from the delivery threads (it
    must be safe to call from another thread)."""

    def __init__(self, receivers: list[Receiver], config: AlertsConfig, record: Callable[[dict], None]):
        self.receivers = list(receivers)
        self.config = config
        self.record = record
        self._queues: list[queue.Queue] = [queue.Queue() for _ in self.receivers]
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._closed = False
        self._gave_up = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._work, args=(receiver, jobs), name=f"alerts-{receiver.name}", daemon=True
            )  # daemon: a delivery the dispatcher gave up on must not keep the process alive
            for receiver, jobs in zip(self.receivers, self._queues)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, alert_id: object, body: dict) -> None:
        """Queue a body for every receiver and return without waiting for any of them."""
        if self._closed:
            raise RuntimeError("the alert dispatcher is closed")
        with self._pending_lock:
            self._pending += len(self.receivers)
        for jobs in self._queues:
            jobs.put((alert_id, body))

    def pending(self) -> int:
        """Deliveries (one body to one receiver) not yet finished, delivered or failed."""
        with self._pending_lock:
            return self._pending

    def close(self, timeout: float) -> bool:
        """Deliver what is queued, waiting up to `timeout` seconds; then give up on the rest (each thread stops at
        its next wait or body). Returns whether everything queued was attempted to the end."""
        if not self._closed:
            self._closed = True
            for jobs in self._queues:
                jobs.put(_STOP)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in self._threads):
            self._gave_up.set()
            log.warning("alerts: gave up on %d deliveries still pending after %g s", self.pending(), timeout)
            return False
        return True

    def _wait(self, seconds: float) -> None:
        if self._gave_up.wait(seconds):
            raise _GaveUp

    def _work(self, receiver: Receiver, jobs: queue.Queue) -> None:
        while True:
            job = jobs.get()
            if job is _STOP or self._gave_up.is_set():
                return
            alert_id, body = job
            try:
                deliver(
                    body,
                    receiver,
                    retries=self.config.retries,
                    backoff_s=self.config.backoff_s,
                    max_backoff_s=self.config.max_backoff_s,
                    record=lambda attempt, alert_id=alert_id: self.record({"alert_id": alert_id, **attempt}),
                    sleep=self._wait,
                )
            except _GaveUp:
                return  # the body stays pending: given up on, not delivered
            except Exception:  # a failing `record` must not stop this receiver's later deliveries
                log.exception("alerts: recording a delivery to %s failed", receiver.name)
            with self._pending_lock:
                self._pending -= 1
