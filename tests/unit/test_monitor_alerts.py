"""Alert delivery: the Alertmanager v4 body, the receivers against a real HTTP server on loopback, retries with
backoff, and the background dispatcher that never holds up its caller."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import socket
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from lmadapt.apps.monitor.alerts import (
    ZERO_TIME,
    AlertDispatcher,
    LogFileReceiver,
    StdoutReceiver,
    WebhookReceiver,
    alertmanager_body,
    deliver,
    receivers_from,
)
from lmadapt.apps.monitor.config import AlertsConfig
from lmadapt.apps.monitor.events import FIRING, NEGATIVE_SHARE_SURGE, RESOLVED, AlertEvent
from lmadapt.errors import LmadaptError

DASHBOARD = "http://127.0.0.1:8050"
GROUP_KEY = '{}:{alertname="NegativeShareSurge", topic="earn", window="1h"}'


def surge(topic: str = "earn", **changes) -> AlertEvent:
    event = AlertEvent(
        status=FIRING,
        alertname=NEGATIVE_SHARE_SURGE,
        topic=topic,
        window="1h",
        severity="warning",
        starts_at=datetime(2024, 3, 1, 10, 0, tzinfo=timezone.utc),
        values={"negative_share": 0.42, "baseline": 0.1355, "z": 5.123, "count": 50},
    )
    return dataclasses.replace(event, **changes)


def resolved(event: AlertEvent) -> AlertEvent:
    return dataclasses.replace(event, status=RESOLVED, ends_at=datetime(2024, 3, 1, 13, 0))  # no zone: UTC


def body_of(*events: AlertEvent) -> dict:
    return alertmanager_body(list(events), receiver="monitor", group_key=GROUP_KEY, external_url=DASHBOARD)


# --- the body ---


def test_firing_body_is_alertmanagers_v4_webhook_body():
    event = surge()
    body = alertmanager_body(
        [event],
        receiver="monitor",
        group_key=GROUP_KEY,
        external_url=DASHBOARD,
        examples={event.fingerprint: ["Earnings miss at Acme", "Acme cuts guidance"]},
    )
    assert list(body) == [
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    ]
    labels = {"alertname": "NegativeShareSurge", "topic": "earn", "severity": "warning", "window": "1h"}
    summary = "Negative news on earn at 42% in the 1h window from 2024-03-01 10:00 UTC, 3.1x the 14% baseline"
    assert body["version"] == "4"
    assert body["groupKey"] == GROUP_KEY
    assert body["truncatedAlerts"] == 0
    assert body["status"] == "firing"
    assert body["receiver"] == "monitor"
    assert body["groupLabels"] == {"alertname": "NegativeShareSurge", "topic": "earn", "window": "1h"}
    assert body["commonLabels"] == labels
    assert body["externalURL"] == DASHBOARD
    [alert] = body["alerts"]
    assert list(alert) == ["status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"]
    assert alert["status"] == "firing"
    assert alert["labels"] == labels
    assert alert["annotations"] == {
        "summary": summary,
        "negative_share": "0.42",
        "baseline": "0.1355",
        "z": "5.123",
        "count": "50",
        "examples": "Earnings miss at Acme\nAcme cuts guidance",
    }
    assert body["commonAnnotations"] == alert["annotations"]
    assert alert["startsAt"] == "2024-03-01T10:00:00Z"
    assert alert["endsAt"] == ZERO_TIME == "0001-01-01T00:00:00Z"
    assert alert["fingerprint"] == event.fingerprint
    generator = httpx.URL(alert["generatorURL"])
    assert (generator.scheme, generator.host, generator.port) == ("http", "127.0.0.1", 8050)
    assert dict(generator.params) == {"topic": "earn", "window": "1h"}
    assert json.loads(json.dumps(body)) == body  # plain JSON, nothing that needs a custom encoder


def test_resolved_body_keeps_the_fingerprint_and_sets_ends_at():
    firing = surge()
    body = body_of(resolved(firing))
    [alert] = body["alerts"]
    assert body["status"] == alert["status"] == "resolved"
    assert alert["fingerprint"] == firing.fingerprint == body_of(firing)["alerts"][0]["fingerprint"]
    assert alert["startsAt"] == "2024-03-01T10:00:00Z"
    assert alert["endsAt"] == "2024-03-01T13:00:00Z"
    assert alert["annotations"]["summary"] == (
        "Resolved: Negative news on earn at 42% in the 1h window from 2024-03-01 10:00 UTC, 3.1x the 14% baseline; "
        "the event ended 2024-03-01 13:00 UTC"
    )
    assert "examples" not in alert["annotations"]


def test_a_body_fires_while_any_alert_fires_and_keeps_only_common_labels():
    body = body_of(resolved(surge("earn")), surge("grain"))
    assert body["status"] == "firing"
    assert [alert["status"] for alert in body["alerts"]] == ["resolved", "firing"]
    assert body["commonLabels"] == {"alertname": "NegativeShareSurge", "severity": "warning", "window": "1h"}
    assert body["groupLabels"] == {"alertname": "NegativeShareSurge", "window": "1h"}
    assert "summary" not in body["commonAnnotations"]
    assert body["commonAnnotations"]["negative_share"] == "0.42"


def test_times_in_another_zone_are_written_in_utc():
    event = surge(starts_at=datetime.fromisoformat("2024-03-01T11:30:00.250000+01:30"))
    assert body_of(event)["alerts"][0]["startsAt"] == "2024-03-01T10:00:00.250000Z"


# --- a real webhook on loopback ---


@contextlib.contextmanager
def webhook_server(failures: int = 0, status: int = 503, delay_s: float = 0.0):
    """An HTTP server on 127.0.0.1 that answers `status` to the first `failures` calls, then 200, each after
    `delay_s`; yields its URL and the bodies it received, in order."""
    received: list[dict] = []
    calls = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                calls.append(body)
                failing = len(calls) <= failures
            time.sleep(delay_s)
            if not failing:
                received.append(body)
            self.send_response(status if failing else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):  # quiet test output
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts", received
    finally:
        server.shutdown()
        server.server_close()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/alerts"


def test_webhook_delivered_on_the_third_attempt_after_two_503s():
    body = body_of(surge())
    attempts, waits = [], []
    with webhook_server(failures=2, status=503) as (url, received):
        delivered = deliver(
            body,
            WebhookReceiver(url, timeout_s=2.0),
            retries=5,
            backoff_s=1.0,
            max_backoff_s=60.0,
            record=attempts.append,
            sleep=waits.append,
        )
    assert delivered is True
    assert received == [body]
    assert [(a["receiver"], a["attempt"], a["ok"]) for a in attempts] == [
        ("webhook", 1, False),
        ("webhook", 2, False),
        ("webhook", 3, True),
    ]
    assert "HTTP 503" in attempts[0]["error"] and url in attempts[0]["error"]
    assert attempts[2]["error"] is None
    assert all(datetime.fromisoformat(a["at"].replace("Z", "+00:00")).tzinfo is not None for a in attempts)
    assert waits == [1.0, 2.0]


def test_backoff_doubles_up_to_its_cap_and_every_attempt_is_recorded():
    class Refusing:
        name = "refusing"

        def send(self, body: dict) -> None:
            raise OSError("disk full")

    attempts, waits = [], []
    delivered = deliver(
        {}, Refusing(), retries=5, backoff_s=1.0, max_backoff_s=3.0, record=attempts.append, sleep=waits.append
    )
    assert delivered is False
    assert waits == [1.0, 2.0, 3.0, 3.0, 3.0]
    assert [(a["attempt"], a["ok"], a["error"]) for a in attempts] == [(n, False, "disk full") for n in range(1, 7)]


def test_a_webhook_that_does_not_answer_in_time_fails_every_attempt_without_raising():
    attempts, waits = [], []
    with webhook_server(delay_s=1.0) as (url, _):
        started = time.monotonic()
        delivered = deliver(
            body_of(surge()),
            WebhookReceiver(url, timeout_s=0.2),
            retries=1,
            backoff_s=0.5,
            max_backoff_s=1.0,
            record=attempts.append,
            sleep=waits.append,
        )
        took = time.monotonic() - started
    assert delivered is False
    assert [(a["attempt"], a["ok"]) for a in attempts] == [(1, False), (2, False)]
    assert all(a["error"] == f"no answer from {url} within 0.2 s" for a in attempts)
    assert waits == [0.5]
    assert took < 1.5  # each call gave up at its timeout, not when the server answered


def test_a_webhook_that_is_down_fails_every_attempt_without_raising():
    url = closed_port_url()
    attempts, waits = [], []
    delivered = deliver(
        body_of(surge()),
        WebhookReceiver(url, timeout_s=1.0),
        retries=2,
        backoff_s=0.1,
        max_backoff_s=1.0,
        record=attempts.append,
        sleep=waits.append,
    )
    assert delivered is False
    assert [(a["attempt"], a["ok"]) for a in attempts] == [(1, False), (2, False), (3, False)]
    assert all(a["error"].startswith(f"could not reach {url}") for a in attempts)
    assert waits == [0.1, 0.2]


# --- log file and console ---


def test_log_file_receiver_appends_one_json_line_per_body(tmp_path):
    path = tmp_path / "not-yet" / "alerts.jsonl"
    first, second = body_of(surge()), body_of(resolved(surge()))
    receiver = LogFileReceiver(path)
    receiver.send(first)
    receiver.send(second)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [first, second]


def test_stdout_receiver_writes_one_line_per_alert():
    lines = []
    StdoutReceiver(write=lines.append).send(body_of(surge("earn"), resolved(surge("grain"))))
    assert lines == [
        "[FIRING] NegativeShareSurge earn 1h: Negative news on earn at 42% in the 1h window from 2024-03-01 10:00 UTC, "
        "3.1x the 14% baseline",
        "[RESOLVED] NegativeShareSurge grain 1h: Resolved: Negative news on grain at 42% in the 1h window from "
        "2024-03-01 10:00 UTC, 3.1x the 14% baseline; the event ended 2024-03-01 13:00 UTC",
    ]


# --- the dispatcher ---


def wait_until(condition, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_dispatcher_submits_return_at_once_and_close_delivers_everything(tmp_path):
    bodies = [body_of(surge(topic)) for topic in ("earn", "grain", "crude")]
    records, lines = [], []
    config = AlertsConfig(retries=2, backoff_s=0.01, max_backoff_s=0.05)
    with webhook_server(delay_s=0.3) as (url, received):
        receivers = [
            WebhookReceiver(url, 5.0),
            LogFileReceiver(tmp_path / "alerts.jsonl"),
            StdoutReceiver(lines.append),
        ]
        dispatcher = AlertDispatcher(receivers, config, records.append)
        started = time.monotonic()
        for alert_id, body in enumerate(bodies):
            dispatcher.submit(alert_id, body)
        assert time.monotonic() - started < 0.1  # the webhook takes 0.3 s a call; submit waited for none
        assert dispatcher.pending() > 0
        assert dispatcher.close(timeout=10) is True
    assert dispatcher.pending() == 0
    assert received == bodies
    assert [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()] == bodies
    assert len(lines) == 3 and "crude" in lines[2]
    assert sorted((r["receiver"], r["alert_id"], r["attempt"], r["ok"]) for r in records) == sorted(
        (name, alert_id, 1, True) for name in ("webhook", "log_file", "stdout") for alert_id in range(3)
    )
    with pytest.raises(RuntimeError, match="closed"):
        dispatcher.submit(3, bodies[0])


def test_a_dead_webhook_does_not_hold_up_the_other_receivers_and_close_gives_up(tmp_path):
    bodies = [body_of(surge(topic)) for topic in ("earn", "grain")]
    records, lines = [], []
    config = AlertsConfig(retries=3, backoff_s=30.0, max_backoff_s=60.0)  # the webhook would retry for minutes
    receivers = [
        WebhookReceiver(closed_port_url(), 1.0),
        LogFileReceiver(tmp_path / "alerts.jsonl"),
        StdoutReceiver(lines.append),
    ]
    dispatcher = AlertDispatcher(receivers, config, records.append)
    for alert_id, body in enumerate(bodies):
        dispatcher.submit(alert_id, body)
    # the log file and console took both bodies while the webhook's first attempt failed and it began to wait
    assert wait_until(lambda: len([r for r in records if r["ok"]]) == 4 and len(records) == 5)
    assert len((tmp_path / "alerts.jsonl").read_text().splitlines()) == 2
    assert len(lines) == 2
    started = time.monotonic()
    assert dispatcher.close(timeout=0.2) is False
    assert time.monotonic() - started < 1.0
    assert dispatcher.pending() == 2  # the webhook's two bodies, never delivered
    webhook_records = [r for r in records if r["receiver"] == "webhook"]
    assert [(r["alert_id"], r["attempt"], r["ok"]) for r in webhook_records] == [(0, 1, False)]


# --- config ---


def test_receivers_from_config_builds_those_set(tmp_path):
    config = AlertsConfig(webhook_url="https://alerts.example.org/hook", log_file=str(tmp_path / "a.jsonl"))
    receivers = receivers_from(config)
    assert [type(r) for r in receivers] == [WebhookReceiver, LogFileReceiver, StdoutReceiver]
    assert [r.name for r in receivers] == ["webhook", "log_file", "stdout"]
    assert receivers[0].url == "https://alerts.example.org/hook" and receivers[0].timeout_s == 5.0
    assert receivers_from(AlertsConfig(stdout=False)) == []


@pytest.mark.parametrize("url", ["ftp://example.org/hook", "127.0.0.1:5001/alerts", "http://"])
def test_a_webhook_url_that_is_not_http_is_refused_naming_the_key_and_the_fix(url):
    with pytest.raises(LmadaptError) as caught:
        receivers_from(AlertsConfig(webhook_url=url))
    message = str(caught.value)
    assert message.startswith(f"alerts.webhook_url: '{url}' is not an http(s) address")
    assert "fix: give the receiver's full address, e.g. alerts.webhook_url=http://" in message
