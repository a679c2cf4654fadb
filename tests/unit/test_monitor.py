"""The monitor on a tiny sentiment run: items checked one by one, labelled, stored with aggregates that match a
recount, resumed where a source stopped, followed as a file grows, read from stdin, on SQLite and a real
PostgreSQL; a surge of negative items on one topic raises one alert, stored and delivered."""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

import lmadapt
from lmadapt.apps.monitor.config import load_monitor_config
from lmadapt.apps.monitor.pipeline import Monitor, content_hash, ingest_source, parse_time, window_start
from lmadapt.apps.monitor.store import MonitorStore, aggregates, items
from lmadapt.errors import LmadaptError
from tests.conftest import FILLER, NEGATIVE, POSITIVE, tiny_overrides

START = datetime(2026, 3, 2, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def sentiment_run(tuned_tiny_bert, tmp_path_factory):
    from tests.conftest import sentiment_rows, write_three_splits

    folder = tmp_path_factory.mktemp("monitor-run")
    files = write_three_splits(folder, sentiment_rows(360))
    return lmadapt.train(
        lmadapt.load_config(None, tiny_overrides(tuned_tiny_bert, files, folder / "runs", "sentiment"))
    )


def config_for(run, tmp_path, url: str | None = None, **settings):
    overrides = [
        f"labels.runs={{sentiment: {run.path}}}",
        "labels.topic=null",
        "input.topic_field=topic",
        "input.keep_fields=[source]",
        "windows=[1h]",
        f"store={url or f'sqlite:///{tmp_path}/monitor.sqlite'}",
        f"alerts.log_file={tmp_path}/alerts.jsonl",
        "alerts.stdout=false",
        "ingest.batch_size=50",
        "ingest.allowed_lateness=0min",
        *[f"{key}={value}" for key, value in settings.items()],
    ]
    return load_monitor_config(None, overrides)


def headline(negative: bool, rng: random.Random, i: int) -> str:
    """Words the tiny model's tokenizer knows; the sentiment word decides the label."""
    words = rng.sample(FILLER, 4)
    words.insert(rng.randrange(5), rng.choice(NEGATIVE if negative else POSITIVE))
    return " ".join(words) + f" {i}"


def stream(hours: int, per_hour: int, share, seed: int = 0) -> list[dict]:
    """Items every few minutes on topics a and b; `share(topic, hour)`: the negative share that hour."""
    rng = random.Random(seed)
    rows = []
    for hour in range(hours):
        for topic in ("a", "b"):
            for k in range(per_hour):
                at = START + timedelta(hours=hour, minutes=k * 60 / per_hour, seconds=rng.random())
                negative = rng.random() < share(topic, hour)
                rows.append(
                    {"text": headline(negative, rng, len(rows)), "time": at.isoformat(), "topic": topic, "source": "t"}
                )
    rows.sort(key=lambda row: row["time"])
    return rows


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def test_times_parse_from_iso_and_epoch_and_say_what_is_wrong():
    from zoneinfo import ZoneInfo

    utc, paris = ZoneInfo("UTC"), ZoneInfo("Europe/Paris")
    assert parse_time("2026-03-02T10:00:00Z", utc) == datetime(2026, 3, 2, 10, tzinfo=timezone.utc)
    assert parse_time("2026-03-02 10:00", paris) == datetime(2026, 3, 2, 9, tzinfo=timezone.utc)
    assert parse_time(0, utc) == datetime(1970, 1, 1, tzinfo=timezone.utc)
    assert parse_time("1700000000", utc) == datetime.fromtimestamp(1_700_000_000, tz=timezone.utc)
    with pytest.raises(ValueError, match="unparsable time 'yesterday'"):
        parse_time("yesterday", utc)
    assert window_start(datetime(2026, 3, 2, 10, 59, tzinfo=timezone.utc), timedelta(hours=1)) == datetime(
        2026, 3, 2, 10, tzinfo=timezone.utc
    )
    assert content_hash("Shares  fell\n") == content_hash("Shares fell")


def test_items_are_checked_one_by_one_labelled_stored_and_counted_in_their_windows(sentiment_run, tmp_path):
    rows = stream(6, 20, lambda topic, hour: 0.3)
    bad = [
        {"time": START.isoformat(), "topic": "a"},
        {"text": "shares fell", "topic": "a"},
        {"text": "shares fell 2", "time": "yesterday", "topic": "a"},
        {"text": "x" * 20_001, "time": START.isoformat(), "topic": "a"},
        {"text": "shares fell 3", "time": START.isoformat()},
    ]
    source = tmp_path / "items.jsonl"
    write_jsonl(source, rows[:100] + bad + rows[100:] + rows[:10])  # the last ten again: duplicates
    source.write_text(source.read_text() + "{not json")  # the last line, without its newline, is read too
    config = config_for(sentiment_run, tmp_path)
    report = ingest_source(config, str(source), progress=lambda _: None)
    assert (report.received, report.stored, report.duplicates, report.rejected) == (len(rows) + 16, len(rows), 10, 6)
    with MonitorStore(config.store_url) as store, store.database.reading() as conn:
        reasons = [row.reason for row in conn.execute(sa.text("select reason from rejects order by id"))]
        stored = conn.execute(sa.select(items)).mappings().all()
        sums = conn.execute(sa.select(aggregates)).mappings().all()
    assert reasons[:5] == [
        "missing text (field 'text')",
        "missing time (field 'time')",
        "unparsable time 'yesterday' (ISO 8601, e.g. 2026-12-02T09:30:00Z, or seconds since 1970)",
        "text of 20001 characters, over the limit of 10000 (input.max_chars)",
        "missing topic (field 'topic')",
    ]
    assert reasons[5].startswith("not JSON")
    # labelled by the run, with its version, the kept field, and sentiment right on these easy texts
    assert {row["models"]["sentiment"].split("@")[0] for row in stored} == {"sentiment"}
    assert all(row["fields"] == {"source": "t"} for row in stored)
    right = [(row["sentiment"] == "negative") == any(w in row["text"].split() for w in NEGATIVE) for row in stored]
    assert sum(right) / len(right) > 0.9
    # the aggregates kept as items arrived equal a recount of the stored items
    recount: dict = {}
    for row in stored:
        at = row["time"].replace(tzinfo=timezone.utc)
        key = (window_start(at, timedelta(hours=1)), row["topic"], row["sentiment"])
        recount[key] = recount.get(key, 0) + 1
    kept = {(row["start"].replace(tzinfo=timezone.utc), row["topic"], row["label"]): row["count"] for row in sums}
    assert kept == recount


def test_a_source_resumes_where_it_stopped_and_nothing_is_stored_twice(sentiment_run, tmp_path):
    rows = stream(4, 20, lambda topic, hour: 0.3)
    source = tmp_path / "items.csv"
    import pandas as pd

    pd.DataFrame(rows).to_csv(source, index=False)
    config = config_for(sentiment_run, tmp_path)
    batches = iter(range(100))
    first = ingest_source(config, str(source), stop=lambda: next(batches) >= 1, progress=lambda _: None)
    assert first.stored == 100  # two batches of 50, then stopped
    said = []
    second = ingest_source(config, str(source), progress=said.append)
    assert second.stored == len(rows) - 100 and second.duplicates == 0
    assert said[0] == f"resuming {source.resolve()} at 100"
    with MonitorStore(config.store_url) as store:
        assert store.counts()["items"] == len(rows)
        assert store.position(str(source.resolve())) == str(len(rows))


def test_a_growing_file_is_followed_and_stdin_is_read(sentiment_run, tmp_path, monkeypatch):
    import io

    rows = stream(2, 20, lambda topic, hour: 0.3)
    source = tmp_path / "live.jsonl"
    write_jsonl(source, rows[:30])
    config = config_for(sentiment_run, tmp_path)

    def append_later():
        time.sleep(0.5)
        with open(source, "a", encoding="utf-8") as out:
            for row in rows[30:]:
                out.write(json.dumps(row) + "\n")
            out.write(json.dumps(rows[0])[:20])  # a line still being written is not read

    writer = threading.Thread(target=append_later)
    writer.start()
    seen = []
    report = ingest_source(
        config,
        str(source),
        follow=True,
        stop=lambda: len(seen) and seen[-1].startswith(f"{len(rows)} items read"),
        progress=seen.append,
    )
    writer.join()
    assert report.stored == len(rows) and report.rejected == 0
    with pytest.raises(LmadaptError, match="a parquet file cannot be followed"):
        parquet = tmp_path / "items.parquet"
        import pandas as pd

        pd.DataFrame(rows).to_parquet(parquet)
        ingest_source(config, str(parquet), follow=True, progress=lambda _: None)

    lines = "".join(json.dumps(row | {"text": row["text"] + " again"}) + "\n" for row in rows[:7]) + "[1, 2]\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    from_stdin = ingest_source(config, "-", progress=lambda _: None)
    assert (from_stdin.stored, from_stdin.rejected) == (7, 1)


def test_a_surge_of_negative_items_on_one_topic_raises_one_alert_stored_and_delivered(sentiment_run, tmp_path):
    def share(topic: str, hour: int) -> float:
        return 0.85 if topic == "a" and 30 <= hour < 34 else 0.15

    rows = stream(48, 30, share)
    source = tmp_path / "items.jsonl"
    write_jsonl(source, rows)
    config = config_for(sentiment_run, tmp_path, **{"detection.volume_z": "null"})
    report = ingest_source(config, str(source), progress=lambda _: None)
    firing = [e for e in report.alerts if e.status == "firing"]
    assert [(e.alertname, e.topic, e.window) for e in firing] == [("NegativeShareSurge", "a", "1h")]
    assert START + timedelta(hours=30) <= firing[0].starts_at <= START + timedelta(hours=31)
    assert any(e.status == "resolved" and e.fingerprint == firing[0].fingerprint for e in report.alerts)
    with MonitorStore(config.store_url) as store:
        assert store.counts()["alerts"] == len(report.alerts) and store.undelivered() == []
    delivered = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    first = delivered[0]["alerts"][0]
    assert first["labels"]["topic"] == "a" and first["status"] == "firing"
    assert any(word in first["annotations"]["examples"] for word in NEGATIVE)
    # scored against the surge as a labelled event: found, no false alert, within one window
    from lmadapt.apps.monitor.evaluate import evaluate_monitor

    events = tmp_path / "events.csv"
    surge = (START + timedelta(hours=30), START + timedelta(hours=34))
    events.write_text(f"topic,start,end,ratio\na,{surge[0].isoformat()},{surge[1].isoformat()},5\n")
    scores = evaluate_monitor(config, str(events))
    assert (scores["precision"], scores["recall"], scores["false_alerts"]) == (1.0, 1.0, 0)
    assert scores["delay_windows_median"] <= 2 and scores["per_event"][0]["label"] == {"ratio": 5}
    events.write_text("topic,begin,end\na,x,y\n")
    with pytest.raises(LmadaptError, match="the events file has no column 'start'"):
        evaluate_monitor(config, str(events))


def test_the_same_ingest_runs_on_postgresql(sentiment_run, tmp_path, postgresql_database):
    rows = stream(3, 20, lambda topic, hour: 0.3)
    source = tmp_path / "items.jsonl"
    write_jsonl(source, rows + rows[:5])
    config = config_for(sentiment_run, tmp_path, url=postgresql_database)
    report = ingest_source(config, str(source), progress=lambda _: None)
    assert (report.stored, report.duplicates) == (len(rows), 5)
    with MonitorStore(config.store_url) as store:
        counts = store.window_counts("1h", START, START + timedelta(hours=3), ["negative"])
        assert sum(row["count"] for row in counts) == len(rows)
        assert {row["topic"] for row in counts} == {"a", "b"}


def test_bad_monitor_settings_are_refused_with_the_key_and_the_fix(sentiment_run, tmp_path):
    with pytest.raises(LmadaptError, match="labels.sentiment names 'sentiment'") as caught:
        load_monitor_config(None, ["labels.runs={tone: runs/x}"])
    assert "tone" in caught.value.fix
    with pytest.raises(LmadaptError, match="'soon' is not a window length"):
        config_for(sentiment_run, tmp_path, windows="[1h, soon]")
    with pytest.raises(LmadaptError, match="unknown rule key 'windw'") as caught:
        config_for(sentiment_run, tmp_path, **{"detection.rules": "[{topic: a, windw: 1h}]"})
    assert "did you mean 'window'" in caught.value.fix
    with pytest.raises(LmadaptError, match="input file not found"):
        ingest_source(config_for(sentiment_run, tmp_path), str(tmp_path / "missing.jsonl"), progress=print)


def test_a_restarted_monitor_goes_on_from_its_stored_detection_state(sentiment_run, tmp_path):
    rows = stream(20, 20, lambda topic, hour: 0.2)
    config = config_for(sentiment_run, tmp_path)
    with MonitorStore(config.store_url) as store:
        first = Monitor(config, store)
        first.ingest(rows[: len(rows) // 2], "feed", "half")
        tested = dict(first.tested_until)
    with MonitorStore(config.store_url) as store:
        again = Monitor(config, store)
        assert again.tested_until == tested and again.detectors.state() == first.detectors.state()


def test_a_replay_paces_the_items_by_their_times_and_resumes(sentiment_run, tmp_path, monkeypatch, capsys):
    from lmadapt.apps.monitor.replay import replay
    from tests.unit.test_cli import run_cli

    rows = stream(2, 20, lambda topic, hour: 0.3)  # two hours of items
    source = tmp_path / "history.jsonl"
    write_jsonl(source, list(reversed(rows)) + [{"text": "no time", "topic": "a"}])
    config = config_for(sentiment_run, tmp_path)
    started = time.monotonic()
    report = replay(config, source, speed=7200.0, progress=lambda _: None)  # two hours in about a second
    assert 0.8 <= time.monotonic() - started < 10
    assert (report.stored, report.rejected) == (len(rows), 1)
    with MonitorStore(config.store_url) as store, store.database.reading() as conn:
        stored = [row[0] for row in conn.execute(sa.select(items.c.time).order_by(items.c.id))]
    assert stored == sorted(stored)  # fed in time order though the file is reversed
    again = replay(config, source, progress=lambda _: None)
    assert again.received == 0  # where it stopped: the end
    import yaml

    recipe = tmp_path / "monitor.yaml"
    raw = {"labels": {"runs": {"sentiment": str(sentiment_run.path)}, "topic": None}, "windows": ["1h"]}
    recipe.write_text(yaml.safe_dump(raw | {"input": {"topic_field": "topic"}, "store": config.store_url}))
    code, _, err = run_cli(monkeypatch, capsys, "monitor", "replay", recipe, "--stream", source, "--speed", "-1")
    assert code == 2 and "speed must be above 0" in err and "Traceback" not in err


def test_an_ingest_killed_mid_stream_resumes_with_no_item_lost_or_stored_twice(sentiment_run, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    import yaml

    rows = stream(15, 40, lambda topic, hour: 0.3)  # 1,200 items, 24 batches
    source = tmp_path / "items.jsonl"
    write_jsonl(source, rows)
    config = config_for(sentiment_run, tmp_path)
    recipe = tmp_path / "monitor.yaml"
    raw = {"labels": {"runs": {"sentiment": str(sentiment_run.path)}, "topic": None}, "windows": ["1h"]}
    raw |= {"input": {"topic_field": "topic"}, "store": config.store_url, "ingest": {"batch_size": 50}}
    recipe.write_text(yaml.safe_dump(raw | {"alerts": {"stdout": False}}))
    command = [sys.executable, "-m", "lmadapt.cli", "monitor", "ingest", str(recipe), str(source)]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)}
    running = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    with MonitorStore(config.store_url) as store:
        while store.counts()["items"] < 150 and running.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running.poll() is None, running.stderr.read()
        os.kill(running.pid, signal.SIGKILL)
        running.wait()
        stored_when_killed = store.counts()["items"]
    assert 150 <= stored_when_killed < len(rows)
    report = ingest_source(config, str(source), progress=lambda _: None)
    assert report.duplicates == 0  # resumed after the last committed batch: nothing read twice
    with MonitorStore(config.store_url) as store, store.database.reading() as conn:
        texts = [row[0] for row in conn.execute(sa.select(items.c.text))]
    assert sorted(texts) == sorted(row["text"] for row in rows)


def test_items_from_a_live_pipe_go_in_without_waiting_for_a_full_batch():
    import os

    from lmadapt.apps.monitor.sources import stream_batches

    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "r") as reader, os.fdopen(write_end, "w") as writer:
        writer.write('{"text": "a"}\n{"text": "b"}\n')
        writer.flush()
        batches = stream_batches(reader, batch_size=100, wait_s=0.1)
        started = time.monotonic()
        records, position = next(batches)  # the pipe stays open: a quiet feed, not its end
        assert [r["text"] for r in records] == ["a", "b"] and position == "2"
        assert time.monotonic() - started < 5
