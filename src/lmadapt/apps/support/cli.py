"""`lmadapt support`: build, try, serve, evaluate and update a support bot (each command a thin call into the
support package's Python API)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table as RichTable

from lmadapt.serving.settings import API_KEY_ENV, MAX_PORT, MIN_PORT, ServiceSettings, setting_help

support_app = typer.Typer(
    help="A customer-service bot on an adapted model: answers what it can (an intent's template, or the nearest "
    "known answer) and hands the rest to a person.\n\nExample: lmadapt support build configs/support/banking77.yaml",
    no_args_is_help=True,
)
console = Console()
errors = Console(stderr=True)
STORE_HELP = (
    "Conversations and feedback: sqlite:///PATH or postgresql://USER@HOST/DB; default: "
    "<bot's folder's parent>/<bot name>-conversations.sqlite (shared by its versions)."
)


@support_app.command()
def build(
    config: Path = typer.Argument(..., help="Support recipe (YAML), e.g. configs/support/banking77.yaml."),
    set_: list[str] = typer.Option([], "--set", help="Override a key: --set policy.target_accuracy=0.9 (repeatable)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing bot folder of the same name."),
) -> None:
    """Train (or reuse) the intent run, index the known questions, calibrate the thresholds; writes a bot folder.

    `lmadapt support keys` lists every key a recipe or --set can give.

    Example: lmadapt support build configs/support/banking77.yaml
    """
    from lmadapt.apps.support.bot import build_bot, load_bot
    from lmadapt.apps.support.config import load_support_config
    from lmadapt.apps.support.evaluate import percent

    folder = build_bot(load_support_config(config, set_), overwrite=overwrite, progress=errors.print)
    bot = load_bot(folder)
    found = bot.record["calibration"]
    recall = "" if found["oos_recall"] is None else f", out-of-scope recall {percent(found['oos_recall'])}"
    console.print(
        f"calibrated: {percent(found['containment'])} of in-scope messages answered at {percent(found['answered_accuracy'])} "
        f"accuracy{recall}"
        + ("" if found["met"] else " (below the target accuracy: the most accurate thresholds are used)")
    )
    console.print(f"bot folder: {folder}")


@support_app.command()
def ask(
    bot: Path = typer.Argument(..., help="Bot folder."),
    messages: list[str] = typer.Argument(..., help="Messages to answer (each outside any conversation)."),
) -> None:
    """Answer messages on the command line: the answer, or why a person should take it.

    Example: lmadapt support ask bots/banking77 "I lost my card"
    """
    from lmadapt.apps.support.bot import load_bot
    from lmadapt.apps.support.evaluate import percent

    loaded = load_bot(bot)
    table = RichTable(title=f"{loaded.name} v{loaded.version}")
    for column in ("message", "answer", "intent", "confidence", "escalated"):
        table.add_column(column, overflow="fold")
    for message, reply in zip(messages, loaded.answer(messages)):
        table.add_row(message, reply.answer, reply.intent, percent(reply.confidence), reply.reason or "no")
    console.print(table)


@support_app.command()
def serve(
    bot: Path = typer.Argument(..., help="Bot folder."),
    store: str | None = typer.Option(None, help=STORE_HELP),
    host: str = typer.Option("127.0.0.1", help="Address to bind (0.0.0.0 exposes the service to the network)."),
    port: int = typer.Option(8000, min=MIN_PORT, max=MAX_PORT, help="Port to listen on."),
    api_key: str | None = typer.Option(
        None, envvar=API_KEY_ENV, help="Require this key (Authorization: Bearer KEY or X-API-Key: KEY)."
    ),
    backend: str | None = typer.Option(
        None,
        help="Inference path the bot reads messages on: torch, torch-bf16, onnx, onnx-int8, openvino, auto; default: "
        "the one its thresholds were calibrated on (bot.json's backend).",
    ),
    workers: int = typer.Option(ServiceSettings.workers, min=0, help=setting_help("workers")),
    max_batch: int = typer.Option(ServiceSettings.max_batch, min=1, help=setting_help("max_batch")),
    max_chars: int = typer.Option(ServiceSettings.max_chars, min=1, help="Most characters in one message (else 422)."),
    timeout: float = typer.Option(ServiceSettings.timeout_s, min=0.001, help=setting_help("timeout_s")),
    shutdown_timeout: float = typer.Option(30.0, min=0, help="Seconds in-flight requests get to finish on SIGTERM."),
) -> None:
    """Serve the bot: POST /v1/chat, conversations, handoff, feedback, a chat page at /, and /v1/predict, /metrics.

    Every reply is stored before it is returned (SQLite in WAL mode by default, or PostgreSQL by --store).

    Example: lmadapt support serve bots/banking77 --port 8000
    """
    from lmadapt.apps.support.service import serve_bot

    settings = ServiceSettings(
        api_key=api_key, max_chars=max_chars, timeout_s=timeout, max_batch=max_batch, workers=workers
    )
    serve_bot(bot, store, settings, backend, host, port, shutdown_timeout, announce=errors.print)


@support_app.command()
def evaluate(
    bot: Path = typer.Argument(..., help="Bot folder."),
    data: str = typer.Option(..., help="Labelled messages (the history's columns; out-of-scope ones so labelled)."),
    output: Path | None = typer.Option(None, help="Folder for report.json, report.md and containment.png."),
) -> None:
    """Replay labelled messages through the bot: containment, accuracy of the answered, escalations by reason,
    out-of-scope recall, retrieval Recall@1/@5 and MRR@10, latency.

    Example: lmadapt support evaluate bots/banking77 --data test.csv --output reports/banking77
    """
    from lmadapt.apps.support.bot import load_bot
    from lmadapt.apps.support.evaluate import evaluate_bot, percent

    report = evaluate_bot(load_bot(bot), data, output, progress=True)
    table = RichTable(title=f"{report['bot']} v{report['version']} on {report['messages']} messages")
    names = ("containment", "answered accuracy", "out-of-scope recall", "Recall@1", "Recall@5", "MRR@10", "p95 ms")
    for name in names:
        table.add_column(name)
    retrieval = report["retrieval"]
    table.add_row(
        percent(report["containment"]),
        percent(report["answered_accuracy"]),
        percent(report["oos_recall"]),
        percent(retrieval["recall_at_1"]),
        percent(retrieval["recall_at_5"]),
        f"{retrieval['mrr_at_10']:.3f}",
        str(report["latency_ms"]["p95"]),
    )
    console.print(table)
    shares = ", ".join(f"{reason} {percent(share)}" for reason, share in report["escalations"].items() if share)
    console.print(f"escalated: {shares or 'none'}")
    if output is not None:
        console.print(f"report: {output / 'report.md'}")
    else:
        console.print_json(json.dumps(report["at_thresholds"]))


@support_app.command()
def update(
    bot: Path = typer.Argument(..., help="Bot folder to start from (left untouched)."),
    feedback: bool = typer.Option(
        True, "--feedback/--no-feedback", help="Learn the store's corrected intents and resolved handoffs."
    ),
    store: str | None = typer.Option(None, help=STORE_HELP),
    name: str | None = typer.Option(None, help="The new version's folder name (default: <name>-v<version+1>)."),
    method: str = typer.Option("replay", help="Continual-learning method: replay, ewc, lwf or naive."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing folder of that name."),
) -> None:
    """Learn from the queue: people's corrections and resolved handoffs update the intent run (continual learning);
    a new bot version is written beside the old one and calibrated again.

    Example: lmadapt support update bots/banking77 --feedback
    """
    from lmadapt.apps.support.update import update_bot
    from lmadapt.errors import LmadaptError

    if not feedback:
        raise LmadaptError("there is nothing to learn without --feedback", where="--no-feedback", fix="drop it")
    folder = update_bot(bot, store_url=store, name=name, method=method, overwrite=overwrite, progress=errors.print)
    console.print(f"bot folder: {folder}")
