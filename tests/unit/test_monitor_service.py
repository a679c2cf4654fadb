"""The monitor's service on a store filled through Monitor.ingest with a tiny sentiment run: every GET answers the
numbers a recount of the stored items gives, POST /v1/items stores a batch and rejects its bad records one by one,
and refusals (auth, limits, unknown windows) are JSON 4xx bodies."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lmadapt.apps.monitor.pipeline import Monitor, window_start
from lmadapt.apps.monitor.service import PLOTLY_PATH, create_monitor_app, plotly_script
from lmadapt.apps.monitor.store import MonitorStore, alerts, items, utc
from lmadapt.serving.settings import ServiceSettings
from tests.unit.test_monitor import START, config_for, sentiment_run, stream  # noqa: F401 (sentiment_run: a fixture)

HOURS = 48
HOUR, DAY = timedelta(hours=1), timedelta(days=1)


def surges(topic: str, hour: int) -> float:
    """Topic b surges and calms down (its alert resolves); topic a surges until the end (its alert stays open)."""
    if topic == "b" and 20 <= hour < 24:
        return 0.85
    if topic == "a" and hour >= 40:
        return 0.85
    return 0.15


def fill(run, folder, **settings) -> tuple:
    """A monitor config on a store under `folder`, filled with HOURS hours of items on topics a and b."""
    config = config_for(run, folder, windows="[1h, 1d]", **{"detection.volume_z": "null"}, **settings)
    rows = stream(HOURS, 30, surges)
    with MonitorStore(config.store_url) as store:
        monitor = Monitor(config, store)
        for start in range(0, len(rows), 200):
            monitor.ingest(rows[start : start + 200], "feed", str(start + 200))
    return config, rows


@pytest.fixture(scope="module")
def filled(sentiment_run, tmp_path_factory):  # noqa: F811
    return fill(sentiment_run, tmp_path_factory.mktemp("monitor-service"))[0]


@pytest.fixture(scope="module")
def stored(filled) -> dict:
    """The stored items and alerts, read back as rows."""
    with MonitorStore(filled.store_url) as store, store.database.reading() as conn:
        found = [dict(row) for row in conn.execute(sa.select(items)).mappings()]
        raised = [dict(row) for row in conn.execute(sa.select(alerts).order_by(alerts.c.id)).mappings()]
    for row in found:
        row["time"] = utc(row["time"])
    return {"items": found, "alerts": raised}


@pytest.fixture
def client(filled):
    with MonitorStore(filled.store_url) as store:
        monitor = Monitor(filled, store)
        with TestClient(create_monitor_app(monitor, store, ServiceSettings(workers=1))) as test_client:
            yield test_client


def recount(rows: list[dict], length: timedelta, topic: str | None) -> dict:
    """Per window start: count, negatives and negative score sum of the stored items of `topic` (None: all)."""
    windows: dict = {}
    for row in rows:
        if topic is None or row["topic"] == topic:
            window = windows.setdefault(window_start(row["time"], length), [0, 0, 0.0])
            window[0] += 1
            window[1] += row["sentiment"] == "negative"
            window[2] += row["negative_score"]
    return windows


def test_trends_give_each_window_s_counts_shares_and_scores_as_the_stored_items_do(client, stored):
    for topic in ("a", "b", None):
        answer = client.get(
            "/v1/trends", params={"window": "1h", "hours": HOURS, **({"topic": topic} if topic else {})}
        )
        assert answer.status_code == 200
        body = answer.json()
        expected = recount(stored["items"], HOUR, topic)
        assert len(body["points"]) == len(expected) == HOURS
        for point in body["points"]:
            count, negatives, score_sum = expected[utc_of(point["start"])]
            assert (point["count"], point["negatives"]) == (count, negatives)
            assert point["negative_share"] == pytest.approx(negatives / count)
            assert point["mean_negative_score"] == pytest.approx(score_sum / count)
    a_hours = {utc_of(point["start"]): point for point in client.get("/v1/trends?window=1h&topic=a").json()["points"]}
    assert min(a_hours.values(), key=lambda p: p["start"])["baseline"] is None  # nothing before the first window
    assert max(p["negative_share"] for t, p in a_hours.items() if t >= START + 40 * HOUR) > 0.6  # the surge shows
    last_six = client.get("/v1/trends", params={"window": "1h", "hours": 6}).json()["points"]
    assert [utc_of(p["start"]) for p in last_six] == [START + (HOURS - 6 + k) * HOUR for k in range(6)]
    days = client.get("/v1/trends?window=1d").json()["points"]
    assert [p["count"] for p in days] == [c for _, (c, _, _) in sorted(recount(stored["items"], DAY, None).items())]


def test_the_baseline_band_is_the_ewma_of_the_windows_before_each_with_z_standard_errors(client, stored, filled):
    points = client.get("/v1/trends", params={"window": "1h", "topic": "b", "hours": HOURS}).json()["points"]
    decay = 0.5 ** (1 / filled.detection.half_life_windows)
    negatives_sum = count_sum = 0.0
    for point, (start, (count, negatives, _)) in zip(points, sorted(recount(stored["items"], HOUR, "b").items())):
        assert utc_of(point["start"]) == start
        if count_sum:
            baseline = negatives_sum / count_sum
            spread = filled.detection.z * math.sqrt(baseline * (1 - baseline) / count)
            assert point["baseline"] == pytest.approx(baseline)
            assert point["band_low"] == pytest.approx(max(0.0, baseline - spread))
            assert point["band_high"] == pytest.approx(min(1.0, baseline + spread))
        negatives_sum, count_sum = decay * negatives_sum + negatives, decay * count_sum + count
    calm = [p for p in points if utc_of(p["start"]) < START + 20 * HOUR and p["baseline"] is not None]
    assert all(0.05 < p["baseline"] < 0.3 for p in calm[3:])


def test_alert_markers_and_open_alerts_come_from_the_stored_alerts(client, stored):
    raised = stored["alerts"]
    firing = {(row["topic"], row["status"]) for row in raised}
    assert ("b", "firing") in firing and ("b", "resolved") in firing and ("a", "firing") in firing
    assert ("a", "resolved") not in firing  # a's surge lasts to the end: its alert is open
    open_alerts = client.get("/v1/alerts", params={"status": "open"}).json()["alerts"]
    assert [(alert["topic"], alert["status"], alert["alertname"]) for alert in open_alerts] == [
        ("a", "firing", "NegativeShareSurge")
    ]
    assert open_alerts[0]["values"]["negative_share"] > open_alerts[0]["values"]["baseline"]
    every = client.get("/v1/alerts", params={"status": "all"}).json()["alerts"]
    assert sorted(alert["id"] for alert in every) == [row["id"] for row in raised]
    markers = client.get("/v1/trends", params={"window": "1h", "topic": "b", "hours": HOURS}).json()["alerts"]
    b_firing = next(row for row in raised if row["topic"] == "b" and row["status"] == "firing")
    b_resolved = next(row for row in raised if row["topic"] == "b" and row["status"] == "resolved")
    assert [(m["status"], utc_of(m["at"])) for m in markers] == [
        ("firing", utc(b_firing["starts_at"])),
        ("resolved", utc(b_resolved["ends_at"])),
    ]
    assert client.get("/v1/alerts", params={"status": "closed"}).status_code == 422


def test_topics_and_the_latest_items_filtered_and_paged_newest_first(client, stored, filled):
    assert client.get("/v1/topics").json() == {"topics": ["a", "b"]}
    with MonitorStore(filled.store_url) as store:  # read from one window's aggregates (the service: the longest)
        assert store.topics("1d") == store.topics("1h") == store.topics() == ["a", "b"]
    expected = sorted(
        (row for row in stored["items"] if row["topic"] == "a" and row["sentiment"] == "negative"),
        key=lambda row: (row["time"], row["id"]),
        reverse=True,
    )
    first = client.get("/v1/items", params={"topic": "a", "label": "negative", "limit": 7}).json()["items"]
    assert [item["id"] for item in first] == [row["id"] for row in expected[:7]]
    assert all(item["labels"]["sentiment"] == "negative" and item["scores"]["sentiment"] for item in first)
    assert first[0]["negative_score"] == pytest.approx(expected[0]["negative_score"])
    after = client.get(
        "/v1/items", params={"topic": "a", "label": "negative", "limit": 7, "before_id": first[-1]["id"]}
    )
    assert [item["id"] for item in after.json()["items"]] == [row["id"] for row in expected[7:14]]
    newest = client.get("/v1/items", params={"limit": 3}).json()["items"]
    by_time = sorted(stored["items"], key=lambda row: (row["time"], row["id"]), reverse=True)
    assert [item["id"] for item in newest] == [row["id"] for row in by_time[:3]]
    for limit in (0, 501):
        refused = client.get("/v1/items", params={"limit": limit})
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_request"


def test_changes_compare_the_latest_period_with_the_one_before_per_topic_and_in_all(client, stored):
    body = client.get("/v1/changes", params={"window": "1d"}).json()
    assert body["window"] == "1d"
    assert [change["topic"] for change in body["changes"]] == [None, "a", "b"]
    for change in body["changes"]:
        days = recount(stored["items"], DAY, change["topic"])
        (before, (count_before, neg_before, _)), (now, (count_now, neg_now, _)) = sorted(days.items())
        assert utc_of(change["current"]["start"]) == now and utc_of(change["previous"]["start"]) == before
        assert (change["current"]["count"], change["previous"]["count"]) == (count_now, count_before)
        assert change["count_change"] == count_now - count_before
        assert change["negative_share_change"] == pytest.approx(neg_now / count_now - neg_before / count_before)
    a_change = next(change for change in body["changes"] if change["topic"] == "a")
    assert a_change["negative_share_change"] > 0.1  # a's surge is in the second day
    hourly = client.get("/v1/changes").json()  # default: the longest window
    assert hourly["window"] == "1d"
    unknown = client.get("/v1/changes", params={"window": "2h"})
    assert unknown.status_code == 422
    assert unknown.json()["error"]["code"] == "unknown_window" and "1h, 1d" in unknown.json()["error"]["message"]


def test_posted_items_are_stored_and_bad_ones_rejected_in_the_report(sentiment_run, tmp_path):  # noqa: F811
    config = config_for(sentiment_run, tmp_path, windows="[1h]")
    good = stream(2, 10, lambda topic, hour: 0.3, seed=5)
    batch = [
        good[0],
        {"time": START.isoformat(), "topic": "a"},
        good[1],
        {"text": "x" * 300, "time": START.isoformat(), "topic": "a"},
        "not a record",
        {"text": "shares fell", "time": "yesterday", "topic": "b"},
        good[0],
    ]
    settings = ServiceSettings(max_texts=len(good), max_chars=200, workers=1)
    with MonitorStore(config.store_url) as store:
        app = create_monitor_app(Monitor(config, store), store, settings)
        with TestClient(app) as client:
            answer = client.post("/v1/items", json={"items": batch})
            assert answer.status_code == 200
            report = answer.json()
            assert (report["received"], report["stored"], report["duplicates"], report["rejected"]) == (7, 2, 1, 4)
            assert [reject["index"] for reject in report["rejects"]] == [1, 3, 4, 5]
            reasons = [reject["reason"] for reject in report["rejects"]]
            assert reasons[0] == "missing text (field 'text')"
            assert reasons[1] == "text of 300 characters, over the service's limit of 200 (--max-chars)"
            assert reasons[2] == "not a record (a JSON object or a table row)"
            assert reasons[3].startswith("unparsable time 'yesterday'")
            listed = client.get("/v1/items").json()["items"]
            assert sorted(item["text"] for item in listed) == sorted([good[0]["text"], good[1]["text"]])
            assert store.counts()["rejects"] == 4

            rest = client.post("/v1/items", json={"items": good[2:]}).json()
            assert rest["stored"] == len(good) - 2 and rest["rejected"] == 0
            assert store.counts()["items"] == len(good)

            empty = client.post("/v1/items", json={"items": []})
            assert empty.status_code == 422 and empty.json()["error"]["code"] == "empty_batch"
            oversized = client.post("/v1/items", json={"items": good + good[:1]})
            assert oversized.status_code == 422 and oversized.json()["error"]["code"] == "too_many_items"
            assert f"over the limit of {len(good)}" in oversized.json()["error"]["message"]
            not_a_list = client.post("/v1/items", json={"items": "text"})
            assert not_a_list.status_code == 422 and not_a_list.json()["error"]["code"] == "invalid_request"
            as_text = client.post("/v1/items", content=b"items", headers={"content-type": "text/plain"})
            assert as_text.status_code == 415
            assert store.counts()["items"] == len(good)


def test_a_keyed_service_refuses_the_api_without_the_key_but_serves_the_page_and_its_script(filled):
    with MonitorStore(filled.store_url) as store:
        app = create_monitor_app(Monitor(filled, store), store, ServiceSettings(api_key="s3cret", workers=1))
        with TestClient(app) as client:
            for path in ("/v1/trends", "/v1/items", "/v1/alerts", "/v1/topics", "/v1/changes", "/v1/monitor"):
                refused = client.get(path)
                assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized", path
            assert client.post("/v1/items", json={"items": [{}]}).status_code == 401
            assert client.get("/v1/topics", headers={"X-API-Key": "s3cret"}).json() == {"topics": ["a", "b"]}
            page = client.get("/")
            assert page.status_code == 200 and "Content-Security-Policy" in page.text
            assert PLOTLY_PATH in page.text and "innerHTML" not in page.text
            script = client.get(PLOTLY_PATH)
            assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
            assert script.content == plotly_script().read_bytes()


def utc_of(text: str):
    from datetime import datetime

    return utc(datetime.fromisoformat(text))


def rounded(value):
    """JSON with its floats rounded (the databases may sum in different orders)."""
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item) for item in value]
    return round(value, 9) if isinstance(value, float) else value


DASHBOARD_READS = [
    "/v1/topics",
    "/v1/trends?window=1h&hours=48",
    "/v1/trends?window=1h&topic=a&hours=12",
    "/v1/trends?window=1d",
    "/v1/items?limit=20",
    "/v1/items?topic=b&label=negative&limit=5",
    "/v1/alerts?status=open",
    "/v1/alerts?status=all",
    "/v1/changes?window=1h",
    "/v1/changes?window=1d",
]


def test_the_dashboard_reads_the_same_from_postgresql(sentiment_run, filled, tmp_path, postgresql_database):  # noqa: F811
    on_postgresql, _ = fill(sentiment_run, tmp_path, url=postgresql_database)
    answers = []
    for config in (filled, on_postgresql):
        with MonitorStore(config.store_url) as store:
            app = create_monitor_app(Monitor(config, store), store, ServiceSettings(workers=1))
            with TestClient(app) as client:
                answers.append([rounded(client.get(path).json()) for path in DASHBOARD_READS])
    on_sqlite, on_postgresql_answers = answers
    assert on_sqlite[1]["points"] and on_sqlite[6]["alerts"]
    for path, sqlite_answer, postgresql_answer in zip(DASHBOARD_READS, on_sqlite, on_postgresql_answers):
        assert postgresql_answer == sqlite_answer, path


def test_the_dashboard_s_queries_read_the_aggregates_and_the_items_indexes(filled):
    """SQLite's plan of every statement the dashboard's reads run: items only through their time indexes, the
    aggregates through their key (but the list of topics, which reads the aggregates' rows, not the items)."""
    statements = []
    with MonitorStore(filled.store_url) as store:

        @sa.event.listens_for(store.database.engine, "before_cursor_execute")
        def keep(conn, cursor, statement, parameters, context, executemany):
            if statement.lstrip().upper().startswith("SELECT"):
                statements.append((statement, parameters))

        app = create_monitor_app(Monitor(filled, store), store, ServiceSettings(workers=1))
        with TestClient(app) as client:
            statements.clear()  # those the monitor ran as it started
            for path in DASHBOARD_READS + ["/v1/items?topic=a&limit=5&before_id=100"]:
                assert client.get(path).status_code == 200, path
        with store.database.engine.connect() as conn:
            plans = {
                " ".join(statement.split()): " | ".join(
                    row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
                )
                for statement, parameters in statements
            }
    assert len(plans) >= 8
    assert sum(" FROM items" in statement for statement in plans) >= 3
    assert sum(" FROM aggregates" in statement for statement in plans) >= 4
    for statement, plan in plans.items():
        if " FROM items" in statement:
            assert (
                "USING INDEX items_topic_time" in plan
                or "USING INDEX items_time" in plan
                or "INTEGER PRIMARY KEY" in plan
            ), plan
            assert "SCAN items |" not in plan + " |", plan
        if " FROM aggregates" in statement and "DISTINCT" not in statement:
            assert "SEARCH aggregates USING" in plan, plan


def test_monitor_serve_has_help_and_refuses_a_missing_config(monkeypatch, capsys, tmp_path):
    from tests.unit.test_cli import run_cli

    code, out, _ = run_cli(monkeypatch, capsys, "monitor", "serve", "--help")
    flat = " ".join(out.split())
    assert code == 0 and "Example: lmadapt monitor serve" in flat
    assert "--api-key" in flat and "--max-texts" in flat and "--max-chars" in flat
    code, _, err = run_cli(monkeypatch, capsys, "monitor", "serve", str(tmp_path / "missing.yaml"))
    assert code == 2 and "config file not found" in err and "Traceback" not in err
