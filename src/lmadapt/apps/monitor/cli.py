"""`lmadapt monitor`: ingest items, follow the mood per topic, alert on surges (each command a thin call into the
monitor package's Python API)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table as RichTable

from lmadapt.serving.settings import API_KEY_ENV, MAX_PORT, MIN_PORT, ServiceSettings, setting_help

monitor_app = typer.Typer(
    help="Financial opinion monitoring on adapted models: items labelled (sentiment, topic), stored with per-window "
    "aggregates, surges of negative news per topic alerted.\n\nExample: lmadapt monitor ingest "
    "configs/monitor/fin-news.yaml news.jsonl",
    no_args_is_help=True,
)
console = Console()
errors = Console(stderr=True)


@monitor_app.command()
def ingest(
    config: Path = typer.Argument(..., help="Monitor config (YAML)."),
    source: str = typer.Argument(..., help="A CSV, JSONL or Parquet file of items, or - for JSON lines on stdin."),
    follow: bool = typer.Option(False, "--follow", help="Keep reading the file as lines are appended (Ctrl-C stops)."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set detection.alpha=0.01 (repeatable)."),
) -> None:
    """Label and store the items, test the windows that close, send the alerts; resumes where the source stopped.

    Example: lmadapt monitor ingest configs/monitor/fin-news.yaml news.jsonl
    """
    from lmadapt.apps.monitor.config import load_monitor_config
    from lmadapt.apps.monitor.pipeline import ingest_source

    report = ingest_source(load_monitor_config(config, set_), source, follow=follow, progress=errors.print)
    table = RichTable(title="ingested")
    for column in ("read", "stored", "duplicates", "rejected", "late", "alerts"):
        table.add_column(column)
    table.add_row(
        *map(str, (report.received, report.stored, report.duplicates, report.rejected, report.late)),
        str(len(report.alerts)),
    )
    console.print(table)


@monitor_app.command()
def replay(
    config: Path = typer.Argument(..., help="Monitor config (YAML)."),
    stream: Path = typer.Option(..., "--stream", help="A CSV, JSONL or Parquet file of timestamped items."),
    speed: float | None = typer.Option(
        None, "--speed", help="Times real time (60: an hour of items in a minute); default: as fast as it goes."
    ),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set detection.alpha=0.01 (repeatable)."),
) -> None:
    """Feed a timestamped history through the whole pipeline (ingest, store, detect, alert) in time order.

    Example: lmadapt monitor replay configs/monitor/fin-news.yaml --stream history.jsonl --speed 600
    """
    from lmadapt.apps.monitor.config import load_monitor_config
    from lmadapt.apps.monitor.replay import replay as replay_stream

    report = replay_stream(load_monitor_config(config, set_), stream, speed=speed, progress=errors.print)
    console.print(
        f"replayed {report.received} items: {report.stored} stored, {report.duplicates} duplicates, "
        f"{report.rejected} rejected; {sum(e.status == 'firing' for e in report.alerts)} alerts fired"
    )


@monitor_app.command()
def evaluate(
    config: Path = typer.Argument(..., help="Monitor config (YAML)."),
    events: str = typer.Option(
        ..., "--events", help="Labelled events: a CSV/JSONL/Parquet file with topic, start, end."
    ),
    output: Path | None = typer.Option(None, help="Write the scores as JSON to this file."),
    set_: list[str] = typer.Option([], "--set", help="Override a key (repeatable)."),
) -> None:
    """Score the alerts the monitor raised against labelled events: each event once, its first alert detects it.

    Example: lmadapt monitor evaluate configs/monitor/fin-news.yaml --events surges.csv
    """
    import json

    from lmadapt.apps.monitor.config import load_monitor_config
    from lmadapt.apps.monitor.evaluate import evaluate_monitor

    scores = evaluate_monitor(load_monitor_config(config, set_), events)
    table = RichTable(title="alerts against labelled events")
    columns = ("precision", "recall", "f1", "detected", "events", "false_alerts", "false_alerts_per_day")
    for column in (*columns, "median delay (windows)"):
        table.add_column(column)
    median = scores["delay_windows_median"]
    table.add_row(
        *(f"{scores[c]:.3f}" if isinstance(scores[c], float) else str(scores[c]) for c in columns),
        "-" if median is None else f"{median:.2f}",
    )
    console.print(table)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(scores, indent=2, default=str) + "\n", encoding="utf-8")
        console.print(f"scores: {output}")


@monitor_app.command()
def serve(
    config: Path = typer.Argument(..., help="Monitor config (YAML)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (0.0.0.0 exposes the service to the network)."),
    port: int = typer.Option(8000, min=MIN_PORT, max=MAX_PORT, help="Port to listen on."),
    api_key: str | None = typer.Option(
        None, envvar=API_KEY_ENV, help="Require this key (Authorization: Bearer KEY or X-API-Key: KEY)."
    ),
    max_texts: int = typer.Option(
        ServiceSettings.max_texts, min=1, help="Most items in one POST /v1/items (else 422)."
    ),
    max_chars: int = typer.Option(
        ServiceSettings.max_chars, min=1, help="Most characters in one item's text (a longer item is rejected)."
    ),
    max_body_bytes: int = typer.Option(ServiceSettings.max_body_bytes, min=1, help=setting_help("max_body_bytes")),
    timeout: float = typer.Option(ServiceSettings.timeout_s, min=0.001, help=setting_help("timeout_s")),
    workers: int = typer.Option(ServiceSettings.workers, min=0, help=setting_help("workers")),
    shutdown_timeout: float = typer.Option(30.0, min=0, help="Seconds in-flight requests get to finish on SIGTERM."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set detection.alpha=0.01 (repeatable)."),
) -> None:
    """Serve the monitor: POST /v1/items to ingest, trends, items, alerts and changes under /v1, a dashboard at /.

    Example: lmadapt monitor serve configs/monitor/fin-news.yaml --port 8000
    """
    from lmadapt.apps.monitor.config import load_monitor_config
    from lmadapt.apps.monitor.service import serve_monitor

    settings = ServiceSettings(
        api_key=api_key,
        max_texts=max_texts,
        max_chars=max_chars,
        max_body_bytes=max_body_bytes,
        timeout_s=timeout,
        workers=workers,
    )
    serve_monitor(load_monitor_config(config, set_), settings, host, port, shutdown_timeout, announce=errors.print)
