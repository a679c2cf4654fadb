"""The monitor benchmark's load parts (issue 22): sustained ingest against batch prediction, and the dashboard's
latency on a million stored items. bench/monitor.py calls `ingest_rows` and `dashboard_row` and writes their rows
(adding the commit and the command) to bench/results/monitor.json.

Ingest (`ingest_rows`, one row per store, sqlite / postgresql). One process, one Labeller: the two runs, loaded as
the monitor loads them (`lmadapt.load(path).inference(backend, batch_size=batch_size)`), serve both measurements,
so both see the same models, backend, batch size and threads.
- Not timed: loading the runs, one warm-up batch (16 texts) through each run, creating the store and its tables,
  starting the PostgreSQL server, building the records.
- Batch prediction: `predictor.predictions(texts, abstain=False)` of the sentiment run, then of the topic run, over
  a segment's texts at once (the predictor sorts them by length and cuts batches of `batch_size`).
- Sustained ingest: `Monitor(config, store).ingest(records, source, position)` over consecutive batches of
  `batch_size` records {text, time} (times one simulated second apart, going forward; windows 15min, 1h, 1d; alerts
  to no receiver; one monitor and one fresh store for the whole row): each record checked (the runs' language
  guard included), labelled by both runs, stored with its windows' aggregates and the source's position in one
  transaction, then the closed windows tested and the detectors' state saved. Each call is timed whole.
- Paired: the texts are cut into segments of `segment_batches` ingest batches (default 2); each segment
  is batch-predicted and ingested, the order alternating (batch first in even segments, ingest first in odd ones),
  so that both see the same machine state (the cores are shared with other work; a slower stretch hits both).
  Batch prediction keeps its own advantage within a segment: it sorts the segment's texts by length before cutting
  batches, where an ingest call pads its batch as the records come.
- batch_texts_per_s = N / (the sum of the batch predictions' times: both runs, every segment): each text is read
  by both runs, as in ingest. items_per_s = N / (the sum of every ingest call's time). ratio = items_per_s /
  batch_texts_per_s. Each segment's own ratio is kept (segment_ratios, and their median), and every timing.
  Target: ratio >= 0.70 on both stores.

Dashboard (`dashboard_row`). A fresh store is filled with `items` synthetic items through MonitorStore.add (the
pipeline's own write path: items and their per-window aggregates, in batches of 10,000), on the 8 Reuters R8
topics and the Financial PhraseBank's sentiment shares, spread over 45 days (two short surges of negative news so
that the detectors have something to say), then the windows are tested once by the monitor's detectors (alerts
stored). Untimed. Then `lmadapt monitor serve` (a real uvicorn server in a subprocess, loopback) is asked what
the dashboard asks: per round, the page's load (/v1/monitor, /v1/topics, then /v1/trends, /v1/alerts?status=open,
/v1/changes and /v1/items at once, as the page does) and its filters (a topic, then a longer window: /v1/trends
and /v1/changes at once; the items by topic and label, by label, by topic). The first round warms the server and
the database's cache and is not counted (its slowest request is reported apart). Latency is measured by the client
(httpx, on the same cores), per request; p50 / p95 per endpoint and over all. Target: p95 < 200 ms.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pwd
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

POSTGRESQL_INSTALL = "apt-get install postgresql (Debian/Ubuntu), and pip install 'lmadapt[postgres]' for the driver"
START = datetime(2026, 3, 2, tzinfo=timezone.utc)
WINDOWS = ["15min", "1h", "1d"]
WARM_UP_TEXTS = 16
TARGET_RATIO = 0.70
SOURCE = "bench"

# Shares of the generated items: R8's training topics and the Financial PhraseBank's (50agree) sentiment.
R8_TOPICS = {
    "earn": 0.518,
    "acq": 0.291,
    "crude": 0.046,
    "trade": 0.046,
    "money-fx": 0.038,
    "interest": 0.035,
    "ship": 0.020,
    "grain": 0.007,
}
SENTIMENTS = {"negative": 0.125, "neutral": 0.594, "positive": 0.281}
DASHBOARD_DAYS = 45
DASHBOARD_BATCH = 10_000
SURGES = [("crude", 30, 0.55), ("grain", 38, 0.6)]  # (topic, day, negative share that day)
DASHBOARD_ROUNDS = 50
ITEMS_SHOWN = 50  # the page's ITEMS_SHOWN
HOURS_SHOWN = 168  # the page's default "Hours back"


# -- PostgreSQL ----------------------------------------------------------------------------------------------------


def _postgresql_bin() -> Path | None:
    """The folder of initdb and pg_ctl: the newest Debian cluster version's, else the ones on PATH."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if debian:
        return debian[-1].parent
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("initdb") else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_postgresql(folder: Path) -> tuple[str, Callable[[], None]]:
    """A throwaway PostgreSQL server on a free loopback port, its cluster in a new folder under `folder`, and a
    database `lmadapt_bench` on it: (its URL, a function that stops the server and removes the cluster). Run as
    the `postgres` user when this process is root (the server refuses root). SystemExit naming what is missing,
    and how to install it, when PostgreSQL or its driver is not installed."""
    from importlib.util import find_spec

    if find_spec("psycopg") is None:
        raise SystemExit(f"PostgreSQL benchmark: the psycopg driver is missing. Install: {POSTGRESQL_INSTALL}")
    bin_dir = _postgresql_bin()
    if bin_dir is None:
        raise SystemExit(
            "PostgreSQL benchmark: initdb and pg_ctl not found (looked in /usr/lib/postgresql/*/bin and on PATH). "
            f"Install: {POSTGRESQL_INSTALL}"
        )
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise SystemExit(
                "PostgreSQL benchmark: running as root and there is no 'postgres' user to run the server as. "
                f"Install: {POSTGRESQL_INSTALL} (it creates the user)"
            ) from None
        as_user = ["runuser", "-u", "postgres", "--"]
    folder.mkdir(parents=True, exist_ok=True)
    cluster = Path(tempfile.mkdtemp(prefix="postgresql-", dir=folder))
    if owner is not None:
        os.chown(cluster, owner.pw_uid, owner.pw_gid)
    port = free_port()
    data, log = cluster / "data", cluster / "server.log"

    def stop() -> None:
        if (data / "postmaster.pid").exists():
            command = [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
            subprocess.run(command, capture_output=True)
        shutil.rmtree(cluster, ignore_errors=True)

    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={cluster}"
    for command in (
        [bin_dir / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8"],
        [bin_dir / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "-o", options, "start"],
    ):
        done = subprocess.run([*as_user, *map(str, command)], capture_output=True, text=True)
        if done.returncode != 0:
            server_log = log.read_text() if log.exists() else ""
            stop()
            raise SystemExit(
                f"PostgreSQL benchmark: {command[0].name} failed: {(done.stderr or done.stdout).strip()} "
                f"{server_log.strip()}"
            )
    server = f"postgresql://postgres@127.0.0.1:{port}"
    try:
        return create_database(server, "lmadapt_bench"), stop
    except BaseException:
        stop()
        raise


def create_database(server: str, name: str) -> str:
    """A new, empty database `name` on the server at `server` (postgresql://user@host:port), as the URL a
    MonitorStore opens."""
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(server).set(drivername="postgresql", database="postgres")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)


# -- the monitor -----------------------------------------------------------------------------------------------------


def monitor_config(
    store_url: str | None, sentiment_run: Path, topic_run: Path, backend: str = "auto", batch_size: int = 256
):
    """The benchmark's monitor on the store at `store_url`: both runs labelling, windows 15min/1h/1d, alerts to
    no receiver."""
    from lmadapt.apps.monitor.config import (
        AlertsConfig,
        IngestConfig,
        LabelsConfig,
        MonitorConfig,
        check_monitor_config,
    )

    config = MonitorConfig(
        name="bench",
        store=store_url,
        windows=list(WINDOWS),
        labels=LabelsConfig(
            runs={"sentiment": str(sentiment_run), "topic": str(topic_run)}, backend=backend, batch_size=batch_size
        ),
        alerts=AlertsConfig(stdout=False, webhook_url=None, log_file=None),
        ingest=IngestConfig(batch_size=batch_size),
    )
    check_monitor_config(config)
    return config


def news_texts(data: Path, count: int) -> list[str]:
    """`count` distinct texts: a Financial PhraseBank sentence (50agree test) joined with a Reuters R8 test story
    (pairs walk both lists at once; their lengths are coprime, so no pair repeats)."""
    import pandas as pd

    from lmadapt.data.builtin import load_builtin

    sentences = pd.read_csv(data / "financial_phrasebank" / "50agree" / "test.csv")["text"].astype(str).tolist()
    stories = load_builtin("reuters_r8_test").frame["text"].astype(str).tolist()
    texts = [f"{sentences[i % len(sentences)]} {stories[i % len(stories)]}" for i in range(count)]
    if len(set(texts)) != len(texts):
        raise ValueError(f"{count} texts repeat: at most {len(sentences) * len(stories)} distinct pairs")
    return texts


def _remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _fresh_store_url(kind: str, workdir: Path, name: str, server: str | None) -> str:
    if kind == "sqlite":
        _remove_sqlite(workdir / f"{name}.sqlite")
        return f"sqlite:///{workdir / f'{name}.sqlite'}"
    return create_database(server, name.replace("-", "_"))


def _batch_seconds(predictors: dict, texts: list[str]) -> float:
    """Batch prediction of `texts` by every run, one run after the other: the seconds it took."""
    started = time.perf_counter()
    for predictor in predictors.values():
        predictor.predictions(texts, abstain=False)
    return time.perf_counter() - started


def _paired(config, labeller, texts: list[str], batch_size: int, segment: int) -> dict:
    """Batch prediction and sustained ingest (into the config's fresh store) of the same texts, segment by
    segment, the order alternating (batch first in even segments, ingest first in odd ones); every timing."""
    from lmadapt.apps.monitor.pipeline import IngestReport, Monitor
    from lmadapt.apps.monitor.store import MonitorStore

    records = [{"text": text, "time": (START + timedelta(seconds=i)).isoformat()} for i, text in enumerate(texts)]
    batch_s, ingest_s, ingest_batch_s, total = [], [], [], IngestReport()
    with MonitorStore(config.store_url) as store:
        monitor = Monitor(config, store, labeller)

        def ingest(first: int, last: int) -> float:
            seconds = 0.0
            for start in range(first, last, batch_size):
                batch = records[start : min(last, start + batch_size)]
                began = time.perf_counter()
                report = monitor.ingest(batch, SOURCE, str(start + len(batch)))
                ingest_batch_s.append(time.perf_counter() - began)
                seconds += ingest_batch_s[-1]
                total.add(report)
            return seconds

        for k, first in enumerate(range(0, len(texts), segment)):
            last = min(len(texts), first + segment)
            if k % 2 == 0:
                batch_s.append(_batch_seconds(labeller.predictors, texts[first:last]))
                ingest_s.append(ingest(first, last))
            else:
                ingest_s.append(ingest(first, last))
                batch_s.append(_batch_seconds(labeller.predictors, texts[first:last]))
        counts = store.counts()
    return {
        "batch_s": batch_s,
        "ingest_s": ingest_s,
        "ingest_batch_s": ingest_batch_s,
        "outcome": {
            "stored": total.stored,
            "rejected": total.rejected,
            "duplicates": total.duplicates,
            "items_in_store": counts["items"],
            "alerts": counts["alerts"],
        },
    }


def ingest_rows(
    sentiment_run: Path,
    topic_run: Path,
    texts: list[str],
    stores: tuple[str, ...] = ("sqlite", "postgresql"),
    backend: str = "auto",
    batch_size: int = 256,
    *,
    workdir: Path,
    segment_batches: int = 2,
) -> list[dict]:
    """One `kind: ingest` row per store: sustained ingest against batch prediction of the same texts, paired
    segment by segment (`segment_batches` ingest batches a segment); see the module's docstring."""
    from lmadapt.apps.monitor.pipeline import Labeller

    if len(set(texts)) != len(texts):
        raise ValueError("the texts must be distinct: a repeated text is a duplicate, not ingested")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    labeller = Labeller(monitor_config(None, sentiment_run, topic_run, backend, batch_size))  # reads the runs only
    used = sorted({predictor.engine.name for predictor in labeller.predictors.values()})
    _batch_seconds(labeller.predictors, texts[:WARM_UP_TEXTS])
    segment = segment_batches * batch_size
    rows = []
    for kind in stores:
        server, stop = None, None
        if kind == "postgresql":
            server, stop = start_postgresql(workdir)
        elif kind != "sqlite":
            raise ValueError(f"unknown store '{kind}' (sqlite or postgresql)")
        try:
            url = _fresh_store_url(kind, workdir, f"ingest-{kind}", server)
            config = monitor_config(url, sentiment_run, topic_run, backend, batch_size)
            found = _paired(config, labeller, texts, batch_size, segment)
        finally:
            if stop is not None:
                stop()
        n = len(texts)
        ratios = [round(b / i, 3) for b, i in zip(found["batch_s"], found["ingest_s"])]
        items_per_s = n / sum(found["ingest_s"])
        batch_texts_per_s = n / sum(found["batch_s"])
        rows.append(
            {
                "kind": "ingest",
                "store": kind,
                "items": n,
                "backend": used[0] if len(used) == 1 else used,
                "batch_size": batch_size,
                "items_per_s": round(items_per_s, 1),
                "batch_texts_per_s": round(batch_texts_per_s, 1),
                "ratio": round(items_per_s / batch_texts_per_s, 3),
                "target_ratio": TARGET_RATIO,
                "segment_texts": segment,
                "segment_ratios": ratios,
                "segment_ratio_median": round(statistics.median(ratios), 3),
                "batch_s": [round(s, 3) for s in found["batch_s"]],
                "ingest_s": [round(s, 3) for s in found["ingest_s"]],
                "ingest_batch_ms": [round(1000 * s, 1) for s in found["ingest_batch_s"]],
                "torch_threads": _threads(),
                **found["outcome"],
            }
        )
    return rows


def _threads() -> int:
    import torch

    return torch.get_num_threads()


# -- the dashboard ---------------------------------------------------------------------------------------------------


def synthetic_items(count: int, versions: dict, seed: int = 0):
    """`count` labelled items in time order over DASHBOARD_DAYS days, in lists of up to DASHBOARD_BATCH: topics and
    sentiments drawn with R8's and the PhraseBank's shares (SURGES: a topic's negative share raised for a day),
    scores as a confident classifier gives them, short made-up texts."""
    import numpy as np

    from lmadapt.apps.monitor.pipeline import content_hash
    from lmadapt.apps.monitor.store import Item

    rng = np.random.default_rng(seed)
    words = random.Random(seed)
    vocabulary = (
        "shares profit loss quarter outlook rose fell bank oil rates tariff ship grain merger bid dividend "
        "forecast margin export import yield currency central deal stake sales"
    ).split()
    topics, topic_p = list(R8_TOPICS), np.array(list(R8_TOPICS.values()))
    labels, label_p = list(SENTIMENTS), np.array(list(SENTIMENTS.values()))
    span = DASHBOARD_DAYS * 86_400
    seconds = np.sort(rng.uniform(0, span, count))
    topic_of = rng.choice(len(topics), count, p=topic_p / topic_p.sum())
    label_of = rng.choice(len(labels), count, p=label_p / label_p.sum())
    for topic, day, share in SURGES:
        during = (topic_of == topics.index(topic)) & (seconds // 86_400 == day)
        negative = rng.random(count) < share
        label_of[during & negative] = labels.index("negative")
    confidence = rng.uniform(0.5, 0.99, count)
    topic_confidence = rng.uniform(0.6, 0.99, count)
    for start in range(0, count, DASHBOARD_BATCH):
        batch = []
        for i in range(start, min(count, start + DASHBOARD_BATCH)):
            topic, label = topics[topic_of[i]], labels[label_of[i]]
            rest = (1 - confidence[i]) / (len(labels) - 1)
            sentiment_scores = {name: float(confidence[i] if name == label else rest) for name in labels}
            topic_rest = (1 - topic_confidence[i]) / (len(topics) - 1)
            topic_scores = {name: float(topic_confidence[i] if name == topic else topic_rest) for name in topics}
            text = " ".join(words.choices(vocabulary, k=words.randint(6, 14))).capitalize() + f" ({i})"
            batch.append(
                Item(
                    content_hash=content_hash(text),
                    time=START + timedelta(seconds=float(seconds[i])),
                    text=text,
                    topic=topic,
                    sentiment=label,
                    negative=label == "negative",
                    negative_score=sentiment_scores["negative"],
                    labels={"sentiment": label, "topic": topic},
                    scores={"sentiment": sentiment_scores, "topic": topic_scores},
                    models=dict(versions),
                    fields={},
                )
            )
        yield batch


def fill_store(config, items: int) -> dict:
    """`items` synthetic items stored through MonitorStore.add (items and aggregates, as the pipeline stores them),
    then the windows tested by the monitor's detectors; what was stored and how long it took."""
    from types import SimpleNamespace

    import lmadapt
    from lmadapt.apps.monitor.pipeline import Monitor, model_version, window_start
    from lmadapt.apps.monitor.store import MonitorStore

    versions = {name: model_version(lmadapt.load(path)) for name, path in config.labels.runs.items()}
    windows = config.window_lengths
    started = time.perf_counter()
    stored = 0
    with MonitorStore(config.store_url) as store:
        for batch in synthetic_items(items, versions):
            stored += store.add(batch, [], SOURCE, str(stored + len(batch)), windows, window_start)
        filled = time.perf_counter()
        monitor = Monitor(config, store, labeller=SimpleNamespace(versions=versions, runs={}))
        monitor.newest = store.time_range()[1]
        monitor.detect()
        counts = store.counts()
        sums = {window: sum(row["count"] for row in _all_counts(store, window, config)) for window in windows}
    return {
        "stored": stored,
        "counts": counts,
        "aggregates_sum_to_items": all(total == stored for total in sums.values()),
        "fill_s": round(filled - started, 1),
        "detect_s": round(time.perf_counter() - filled, 1),
    }


def _all_counts(store, window: str, config) -> list[dict]:
    far = timedelta(days=10 * 365)
    return store.window_counts(window, START - far, START + far, config.negative_labels)


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q))


def _page_requests(topics: list[str], labels: list[str], windows: list[str], round_: int) -> list[list[tuple]]:
    """One round of the dashboard's requests, in steps (a step's requests go at once): (name, path, params)."""
    topic = topics[round_ % len(topics)]
    label = labels[round_ % len(labels)]
    window = windows[1 + round_ % (len(windows) - 1)] if len(windows) > 1 else windows[0]
    first = windows[0]
    return [
        [("monitor", "/v1/monitor", {})],
        [("topics", "/v1/topics", {})],
        [  # the page's load, at once
            ("trends", "/v1/trends", {"window": first, "hours": HOURS_SHOWN}),
            ("alerts", "/v1/alerts", {"status": "open"}),
            ("changes", "/v1/changes", {"window": first}),
            ("items", "/v1/items", {"limit": ITEMS_SHOWN}),
        ],
        [  # a topic chosen
            ("trends?topic", "/v1/trends", {"window": first, "topic": topic, "hours": HOURS_SHOWN}),
            ("changes", "/v1/changes", {"window": first}),
        ],
        [  # a longer window
            ("trends?topic", "/v1/trends", {"window": window, "topic": topic, "hours": HOURS_SHOWN}),
            ("changes", "/v1/changes", {"window": window}),
        ],
        [("items?topic&label", "/v1/items", {"topic": topic, "label": label, "limit": ITEMS_SHOWN})],
        [("items?label", "/v1/items", {"label": label, "limit": ITEMS_SHOWN})],
        [("items?topic", "/v1/items", {"topic": topic, "limit": ITEMS_SHOWN})],
    ]


async def _time_dashboard(url: str, rounds: int) -> tuple[dict[str, list[float]], list[float], int]:
    """Latency (ms) of each request by name over the counted rounds, the slowest of the first (warm-up) round,
    and how many requests failed."""
    import httpx

    latencies: dict[str, list[float]] = {}
    failures = 0
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        monitor = (await client.get("/v1/monitor")).json()
        topics = (await client.get("/v1/topics")).json()["topics"]

        async def timed(name: str, path: str, params: dict, into: dict) -> None:
            nonlocal failures
            began = time.perf_counter()
            answer = await client.get(path, params=params)
            into.setdefault(name, []).append(1000 * (time.perf_counter() - began))
            if answer.status_code != 200:
                failures += 1

        warm: dict[str, list[float]] = {}
        for round_ in range(rounds + 1):
            into = warm if round_ == 0 else latencies
            for step in _page_requests(topics, monitor["labels"], monitor["windows"], round_):
                await asyncio.gather(*(timed(name, path, params, into) for name, path, params in step))
    return latencies, [ms for values in warm.values() for ms in values], failures


def dashboard_row(
    workdir: Path,
    items: int = 1_000_000,
    store: str = "sqlite",
    *,
    sentiment_run: Path,
    topic_run: Path,
    rounds: int = DASHBOARD_ROUNDS,
) -> dict:
    """The `kind: dashboard` row: the dashboard's requests against `lmadapt monitor serve` on a store of `items`
    synthetic items (see the module's docstring), removed afterwards. The runs are those the service loads (its
    /v1/monitor names their models and labels)."""
    import yaml

    from lmadapt.serving.app import wait_until_serving

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stop = None
    if store == "postgresql":
        url, stop = start_postgresql(workdir)
    elif store == "sqlite":
        url = _fresh_store_url("sqlite", workdir, "dashboard", None)
    else:
        raise ValueError(f"unknown store '{store}' (sqlite or postgresql)")
    server = None
    try:
        config = monitor_config(url, sentiment_run, topic_run)
        filled = fill_store(config, items)
        config_file = workdir / f"dashboard-{store}.yaml"
        config_file.write_text(yaml.safe_dump(dataclasses.asdict(config)), encoding="utf-8")
        port = free_port()
        command = [sys.executable, "-m", "lmadapt.cli", "monitor", "serve", str(config_file), "--port", str(port)]
        server_log = workdir / f"dashboard-{store}-server.log"
        with server_log.open("w") as log:
            server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        address = f"http://127.0.0.1:{port}"
        try:
            wait_until_serving(address, server, timeout_s=300)
        except RuntimeError:
            server.kill()
            raise RuntimeError(f"the monitor service did not start: {server_log.read_text()[-2000:]}") from None
        latencies, warm, failures = asyncio.run(_time_dashboard(address, rounds))
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if stop is not None:
            stop()  # the server and its cluster removed
        if store == "sqlite":
            _remove_sqlite(workdir / "dashboard.sqlite")  # a gigabyte at 1M items
    every = [ms for values in latencies.values() for ms in values]
    return {
        "kind": "dashboard",
        "store": store,
        "items": filled["stored"],
        "p95_ms": round(_percentile(every, 95), 1),
        "p50_ms": round(_percentile(every, 50), 1),
        "max_ms": round(max(every), 1),
        "target_p95_ms": 200,
        "requests": len(every),
        "failed": failures,
        "rounds": rounds,
        "warm_up_max_ms": round(max(warm), 1),
        "per_endpoint": {
            name: {
                "requests": len(values),
                "p50_ms": round(_percentile(values, 50), 1),
                "p95_ms": round(_percentile(values, 95), 1),
                "max_ms": round(max(values), 1),
            }
            for name, values in sorted(latencies.items())
        },
        "store_counts": filled["counts"],
        "aggregates_sum_to_items": filled["aggregates_sum_to_items"],
        "fill_s": filled["fill_s"],
        "detect_s": filled["detect_s"],
        "days": DASHBOARD_DAYS,
    }
