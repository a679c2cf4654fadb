"""The monitor on the shared service (`lmadapt monitor serve`): its routes beside /v1/predict, with the same API key,
limits, metrics and JSON errors, and the dashboard.

    POST /v1/items                   {"items": [record, ...]} -> the ingest report (stored, duplicates, rejected with
                                     their reasons, alerts raised); a bad record is rejected in it, never the batch
    GET  /v1/monitor                 the monitor: name, windows, sentiment labels, negative labels, models
    GET  /v1/topics                  the topics with items
    GET  /v1/trends?window=&topic=&hours=
                                     per window: count, negatives, negative share, mean negative score, the baseline
                                     and its band; the alerts of the range as markers
    GET  /v1/items?topic=&label=&limit=&before_id=
                                     the latest items, newest first, with their labels and scores
    GET  /v1/alerts?status=open|all  open alerts (firing, not resolved), or every alert
    GET  /v1/changes?window=         the latest period against the one before, per topic and for all topics
    GET  /                           the dashboard (its charts drawn by plotly's own bundled JavaScript, served at
                                     /static/plotly.min.js: the page works offline)

The baseline band of /v1/trends is computed here from the stored aggregates: a count-weighted exponentially weighted
mean of the negative shares of the windows before each one, with the detectors' half-life (detection.half_life_windows)
and empty windows decaying it as they do; the band is the baseline plus or minus detection.z standard errors at the
window's count. Unlike the detectors' baseline it does not leave out the windows that fired, so during a long surge it
drifts up a little where theirs holds; the alerts' own baselines are in their values.
"""

from __future__ import annotations

import json
import math
import threading
from datetime import datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from fastapi import Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from lmadapt.apps.monitor.pipeline import IngestReport, Monitor, window_start
from lmadapt.apps.monitor.sources import Unreadable
from lmadapt.apps.monitor.store import RAW_CHARS, MonitorStore
from lmadapt.serving.errors import ERROR_RESPONSES, ApiError
from lmadapt.serving.routes import ServiceRouter
from lmadapt.serving.settings import ServiceSettings

SOURCE = "http"  # the source name of items posted to /v1/items
PLOTLY_PATH = "/static/plotly.min.js"
MAX_ITEMS_LISTED = 500
BASELINE_WARMUP_HALF_LIVES = 4  # windows read before a trend's range so that its first baselines have a history


class ItemsRequest(BaseModel):
    items: list[Any] = Field(
        description="Records with the monitor's input fields (text, time, topic, ...); a bad one is rejected in the "
        "report with its reason.",
        examples=[[{"text": "Shares fell after the profit warning", "time": "2026-03-02T09:30:00Z", "topic": "earn"}]],
    )


class AlertEventOut(BaseModel):
    status: str
    alertname: str
    topic: str
    window: str
    severity: str
    starts_at: datetime
    ends_at: datetime | None
    fingerprint: str
    values: dict


class IngestResponse(BaseModel):
    received: int
    stored: int
    duplicates: int
    rejected: int = Field(description="Records refused one by one; `rejects` says why.")
    late: int = Field(description="Stored, but their window had been tested already.")
    rejects: list[dict] = Field(description="Each rejected record's index in the batch and the reason.")
    alerts: list[AlertEventOut] = Field(description="The alert events the windows closed by this batch raised.")


def dashboard_page() -> str:
    return files("lmadapt.apps.monitor").joinpath("dashboard.html").read_text(encoding="utf-8")


def plotly_script() -> Path:
    """plotly's own minified JavaScript, from the installed Python package."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def baseline_band(points: list[dict], grid: list[datetime], decay: float, z: float) -> None:
    """Give each point (a window with items, on the `grid` of window starts) its baseline and band, in place: the
    count-weighted EWMA of the shares of the windows before it (every window of the grid decays it, empty ones
    too), and the baseline plus or minus `z` standard errors of a share at the point's count."""
    by_start = {point["start"]: point for point in points}
    negatives_sum = count_sum = 0.0
    for moment in grid:
        point = by_start.get(moment)
        if point is not None:
            baseline = negatives_sum / count_sum if count_sum > 0 else None
            point["baseline"] = baseline
            if baseline is None:
                point["band_low"] = point["band_high"] = None
            else:
                spread = z * math.sqrt(baseline * (1 - baseline) / point["count"])
                point["band_low"], point["band_high"] = max(0.0, baseline - spread), min(1.0, baseline + spread)
        negatives_sum = decay * negatives_sum + (point["negatives"] if point else 0)
        count_sum = decay * count_sum + (point["count"] if point else 0)


def marker(alert: dict) -> dict:
    """An alert as a point on the trend: where its event started (firing) or ended (resolved)."""
    at = alert["starts_at"] if alert["status"] == "firing" else alert["ends_at"]
    return {
        "at": at,
        "status": alert["status"],
        "alertname": alert["alertname"],
        "topic": alert["topic"],
        "window": alert["window"],
        "fingerprint": alert["fingerprint"],
        "negative_share": alert["values"].get("negative_share"),
        "baseline": alert["values"].get("baseline"),
    }


def monitor_router(monitor: Monitor, store: MonitorStore, settings: ServiceSettings) -> ServiceRouter:
    router = ServiceRouter()
    config = monitor.config
    windows = monitor.windows
    negative_labels = config.negative_labels
    longest = next(reversed(windows))  # the topics are read from its aggregates, the fewest rows
    sentiment_run = monitor.labeller.runs[config.labels.sentiment]
    ingesting = threading.Lock()  # one batch at a time: the monitor's detection state is not shared

    def window_length(window: str | None) -> tuple[str, timedelta]:
        name = window or next(iter(windows))
        if name not in windows:
            raise ApiError(
                422,
                "unknown_window",
                f"window '{name}' is not one of the monitor's windows ({', '.join(windows)})",
                fix="GET /v1/monitor lists them",
            )
        return name, windows[name]

    def ingest(records: list) -> IngestReport:
        with ingesting:
            return monitor.ingest(records, SOURCE)

    @router.post("/v1/items", response_model=IngestResponse, responses=ERROR_RESPONSES)
    async def post_items(body: ItemsRequest) -> IngestResponse:
        """Check, label and store a batch of records, then test the windows it closed (alerts go to the receivers)."""
        if not body.items:
            raise ApiError(422, "empty_batch", "the batch has no items", fix='send {"items": [{"text": ..., ...}]}')
        if len(body.items) > settings.max_texts:
            raise ApiError(
                422,
                "too_many_items",
                f"the batch has {len(body.items)} items, over the limit of {settings.max_texts}",
                fix=f"send at most {settings.max_texts} items per request",
            )
        records = [_within_limit(record, config.input.text_field, settings.max_chars) for record in body.items]
        report = await run_in_threadpool(ingest, records)
        return IngestResponse(
            received=report.received,
            stored=report.stored,
            duplicates=report.duplicates,
            rejected=report.rejected,
            late=report.late,
            rejects=[{"index": int(position), "reason": reason} for position, reason in report.rejects],
            alerts=[
                AlertEventOut(
                    status=event.status,
                    alertname=event.alertname,
                    topic=event.topic,
                    window=event.window,
                    severity=event.severity,
                    starts_at=event.starts_at,
                    ends_at=event.ends_at,
                    fingerprint=event.fingerprint,
                    values=event.values,
                )
                for event in report.alerts
            ],
        )

    @router.get("/v1/monitor")
    async def monitor_info() -> dict:
        """The monitor served: its name, windows, the sentiment labels (negative ones apart) and its models."""
        return {
            "name": config.name,
            "windows": list(windows),
            "labels": list(sentiment_run.labels.labels),
            "negative_labels": negative_labels,
            "models": monitor.labeller.versions,
        }

    @router.get("/v1/topics")
    async def topics() -> dict:
        """The topics with items."""
        return {"topics": await run_in_threadpool(store.topics, longest)}

    @router.get("/v1/trends", responses=ERROR_RESPONSES)
    async def trends(
        window: str | None = Query(None, description="One of the monitor's windows; default: the shortest."),
        topic: str | None = Query(None, description="A topic; absent: all topics summed."),
        hours: float = Query(168.0, gt=0, le=24 * 366, description="How far back from the latest window."),
    ) -> dict:
        """Per window of the range: count, negatives, negative share, mean negative score, baseline and band; the
        alerts of the range as markers."""
        name, length = window_length(window)
        last = await run_in_threadpool(store.last_window, name)
        if last is None:
            return {
                "window": name,
                "window_seconds": length.total_seconds(),
                "topic": topic,
                "start": None,
                "end": None,
                "points": [],
                "alerts": [],
            }
        end = last + length
        start = window_start(end - timedelta(hours=hours), length)
        warmup = math.ceil(BASELINE_WARMUP_HALF_LIVES * config.detection.half_life_windows)
        history_start = start - warmup * length
        rows = await run_in_threadpool(store.trend, name, topic, history_start, end, negative_labels)
        grid = [history_start + k * length for k in range((end - history_start) // length)]
        decay = 0.5 ** (1.0 / config.detection.half_life_windows)
        baseline_band(rows, grid, decay, config.detection.z)
        alerts = await run_in_threadpool(store.alerts, start)
        markers = [
            marker(alert) for alert in alerts if alert["window"] == name and (topic is None or alert["topic"] == topic)
        ]
        return {
            "window": name,
            "window_seconds": length.total_seconds(),
            "topic": topic,
            "start": start,
            "end": end,
            "points": [row for row in rows if row["start"] >= start],
            "alerts": markers,
        }

    @router.get("/v1/items", responses=ERROR_RESPONSES)
    async def latest_items(
        topic: str | None = Query(None),
        label: str | None = Query(None, description="A sentiment label."),
        limit: int = Query(50, ge=1, le=MAX_ITEMS_LISTED),
        before_id: int | None = Query(None, description="The last item of the previous page: the next page."),
    ) -> dict:
        """The latest items, newest first, with their labels, scores and models."""
        found = await run_in_threadpool(store.latest_items, limit, topic, label, before_id)
        return {"items": found}

    @router.get("/v1/alerts", responses=ERROR_RESPONSES)
    async def list_alerts(
        status: Literal["open", "all"] = Query("open", description="open: firing, not resolved; all: every alert."),
    ) -> dict:
        """Open alerts (oldest first), or every alert."""
        found = await run_in_threadpool(store.open_alerts if status == "open" else store.alerts)
        return {"alerts": found}

    @router.get("/v1/changes", responses=ERROR_RESPONSES)
    async def changes(
        window: str | None = Query(None, description="One of the monitor's windows; default: the longest."),
    ) -> dict:
        """The latest period (a window of this length, maybe still open) against the one before, per topic and for
        all topics together (topic null)."""
        name, length = window_length(window or next(reversed(windows)))

        def compare() -> list[dict]:
            found = [store.change(name, length, topic, negative_labels) for topic in [None, *store.topics(longest)]]
            return [row for row in found if row is not None]

        return {"window": name, "changes": await run_in_threadpool(compare)}

    return router


def _within_limit(record, text_field: str, max_chars: int):
    """The record, or an Unreadable the monitor rejects where its text is over the service's limit."""
    if isinstance(record, dict):
        text = record.get(text_field)
        if isinstance(text, str) and len(text) > max_chars:
            return Unreadable(
                raw=json.dumps(record, ensure_ascii=False)[:RAW_CHARS],
                reason=f"text of {len(text)} characters, over the service's limit of {max_chars} (--max-chars)",
            )
    return record


def create_monitor_app(monitor: Monitor, store: MonitorStore, settings: ServiceSettings):
    """The service with the monitor's routes and the dashboard; /v1/predict serves the monitor's runs too."""
    from lmadapt.serving.app import create_app

    return create_app(
        list(monitor.labeller.runs.values()),
        settings,
        routers=[monitor_router(monitor, store, settings)],
        pages={"/": dashboard_page()},
        assets={PLOTLY_PATH: plotly_script()},
    )


def serve_monitor(
    config,
    settings: ServiceSettings,
    host: str = "127.0.0.1",
    port: int = 8000,
    shutdown_timeout_s: float = 30.0,
    announce=print,
) -> None:
    """Serve a monitor until SIGINT or SIGTERM (see `lmadapt monitor serve`): items posted are labelled, stored and
    tested, their alerts sent to the config's receivers; the dashboard at /."""
    from lmadapt.apps.monitor.alerts import AlertDispatcher, receivers_from
    from lmadapt.serving.app import serve_forever

    with MonitorStore(config.store_url) as store:
        monitor = Monitor(config, store)
        dispatcher = AlertDispatcher(receivers_from(config.alerts), config.alerts, store.record_delivery)
        for alert_id, body in store.undelivered():  # raised before a stop, not yet delivered
            dispatcher.submit(alert_id, body)
        monitor.dispatch = dispatcher.submit
        try:
            app = create_monitor_app(monitor, store, settings)
            announce(f"serving monitor {config.name} on http://{host}:{port} (dashboard: /); store: {store.where}")
            serve_forever(app, host, port, shutdown_timeout_s)
        finally:
            dispatcher.close(timeout=config.alerts.timeout_s * (config.alerts.retries + 1))
