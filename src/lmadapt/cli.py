"""The `lmadapt` command line: one small function per command over the Python API."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click
import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable
from rich.text import Text

from lmadapt.apps.monitor.cli import monitor_app
from lmadapt.apps.recommend.cli import recommend_app
from lmadapt.apps.support.cli import support_app
from lmadapt.errors import LmadaptError
from lmadapt.serving.settings import API_KEY_ENV, MAX_PORT, MIN_PORT, ServiceSettings, setting_help
from lmadapt.tuning import SUBSET_ABOVE, SUBSET_ROWS

app = typer.Typer(
    help="Adapt pretrained language models to real tasks, offline or online, and put them to work.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)
data_app = typer.Typer(
    help="Look at data before training on it.\n\nExample: lmadapt data inspect train.csv --against test.csv",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")
app.add_typer(support_app, name="support")
app.add_typer(monitor_app, name="monitor")
app.add_typer(recommend_app, name="recommend")
console = Console()
errors = Console(stderr=True)


@app.callback()
def _global(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    verbose: bool = typer.Option(False, "--verbose", help="Show library log messages and load reports."),
) -> None:
    if debug:
        os.environ["LMADAPT_DEBUG"] = "1"
    if not verbose:
        import logging

        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        logging.getLogger("lmadapt").setLevel(logging.WARNING)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def _metrics_table(title: str, rows: list[tuple[str, dict]]) -> RichTable:
    table = RichTable(title=title)
    # Run names are copied into the next command: never cut short (one too long for the terminal folds).
    table.add_column("run", overflow="fold")
    for column in ("trainable", "train s", "val acc", "test acc", "test F1"):
        table.add_column(column, justify="right")
    for name, m in rows:
        params = m.get("parameters", {})
        table.add_row(
            f"{name} ({m.get('strategy', '-')})",
            f"{_count(params.get('trainable', 0))} ({params.get('trainable_pct', 0):.1f}%)",
            f"{m.get('training', {}).get('runtime_s', 0):.0f}",
            _pct(m.get("validation", {}).get("accuracy")),
            _pct(m.get("test", {}).get("accuracy")),
            _pct(m.get("test", {}).get("macro_f1")),
        )
    table.caption = "accuracy and macro-F1 in %"
    return table


@app.command()
def train(
    config: Path = typer.Argument(..., help="YAML recipe, e.g. configs/sentiment/minilm_full.yaml."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set train.epochs=5 (repeatable)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its last checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder of the same name."),
) -> None:
    """Adapt a model as a recipe says; writes a run folder.

    `lmadapt keys` lists every config key a recipe or --set can give, with its type, default and help.

    Example: lmadapt train configs/sentiment/minilm_full.yaml --set train.epochs=2
    """
    import lmadapt

    run = lmadapt.train(lmadapt.load_config(config, set_), resume=resume, overwrite=overwrite)
    if run is not None:
        console.print(_metrics_table("lmadapt train", [(run.name, run.metrics)]))
        _print_removed_rows(run.metrics.get("data", {}))
        if "ood" in run.metrics:
            console.print(_ood_table("out-of-scope detection on test", run.metrics["ood"]["test"]))
        console.print(f"run folder: {run.path}")


def _ood_table(title: str, report: dict) -> RichTable:
    """Each calibrated out-of-scope method at its threshold; the one the run applies is starred."""
    table = RichTable(title=title)
    table.add_column("method", no_wrap=True)
    for column in ("threshold", "in-scope acc", "oos recall", "oos prec", "AUROC", "FPR95", "AUPR"):
        table.add_column(column, justify="right")
    for method, m in report["methods"].items():
        table.add_row(
            f"{method} *" if method == report["method"] else method,
            f"{m['threshold']:.3g}",
            *(
                _pct(m.get(key))
                for key in ("in_scope_accuracy", "oos_recall", "oos_precision", "auroc", "fpr95", "aupr")
            ),
        )
    rows = f"{report['in_scope_rows']} in-scope and {report['oos_rows']} out-of-scope rows"
    without = _pct(report["accuracy_without_abstention"])
    table.caption = f"* applied; in %; {rows}; in-scope accuracy without abstention {without}"
    return table


def _print_removed_rows(report: dict) -> None:
    from lmadapt.data.prepare import removal_summary

    for line in removal_summary(report):
        console.print(f"removed before training: {escape(line)}")
    if report.get("rows_read", {}).get("test", 0) > report.get("rows", {}).get("test", 0):
        console.print(f"test figures are on the {report['rows']['test']} test rows left, not on the whole test file")


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="Run folder written by `lmadapt train`."),
    data: str = typer.Option(..., "--data", help="Labelled data file (CSV/TSV/JSONL/Parquet) or builtin:<name>."),
    output: Path | None = typer.Option(
        None, "--output", help="Folder for metrics.json and confusion.png [default: evaluations/<run>-<data>]."
    ),
    text_column: str | None = typer.Option(None, help="Text column, if not the run's."),
    label_column: str | None = typer.Option(None, help="Label column, if not the run's."),
) -> None:
    """Metrics of a trained run on labelled data, with a confusion matrix PNG.

    Data the run's backbone cannot read (more unknown tokens than the run's model.max_unknown_share)
    is refused, as in `lmadapt predict`. For a run with out-of-scope detection, rows labelled with its
    out-of-scope label (or its abstain label) measure abstention: in-scope accuracy, out-of-scope
    recall and precision, AUROC, FPR@95 and AUPR of each method, and two PNGs.

    Example: lmadapt evaluate runs/demo-full --data reviews_test.csv
    """
    import lmadapt

    metrics = lmadapt.evaluate(
        run, data, output=output, progress=True, text_column=text_column, label_column=label_column
    )
    table = RichTable(title=f"{run} on {data}")
    table.add_column("label")
    for column in ("precision %", "recall %", "F1 %", "support"):
        table.add_column(column, justify="right")
    for label, s in metrics["per_class"].items():
        table.add_row(label, _pct(s["precision"]), _pct(s["recall"]), _pct(s["f1"]), str(s["support"]))
    console.print(table)
    console.print(
        f"accuracy {_pct(metrics['accuracy'])}%  macro-F1 {_pct(metrics['macro_f1'])}%  ({metrics['examples']} examples)"
    )
    if "ood" in metrics:
        console.print(_ood_table("out-of-scope detection", metrics["ood"]))
    console.print(f"written to {metrics['output']}")


@app.command()
def predict(
    run: Path = typer.Argument(..., help="Run folder written by `lmadapt train`."),
    texts: list[str] = typer.Argument(None, help="Texts to classify."),
    input: str | None = typer.Option(None, "--input", help="File of texts (CSV/TSV/JSONL/Parquet)."),
    output: Path | None = typer.Option(
        None, "--output", help="Where to write the scored file (format from its extension)."
    ),
    text_column: str | None = typer.Option(None, help="Text column of --input, if not the run's."),
    batch_size: int = typer.Option(64, min=1, help="Texts per forward pass."),
    backend: str = typer.Option(
        "auto",
        help="auto (the fastest of the run's paths on this CPU, as measured on its texts once per CPU and recorded in "
        "the run folder), torch, torch-bf16, onnx, onnx-int8, openvino.",
    ),
    workers: int = typer.Option(0, min=0, help="Batches run at once, each on its share of the cores; 0: one per core."),
    no_abstain: bool = typer.Option(
        False,
        "--no-abstain",
        help="For a run with out-of-scope detection: answer the best label even where the run would abstain.",
    ),
    ray: str | None = typer.Option(
        None,
        "--ray",
        metavar="ADDRESS",
        help="Score --input (a file, folder or glob of Parquet/CSV/TSV/JSONL files of one format, where every node "
        "sees them) on Ray into the folder --output, "
        "as Parquet parts; ADDRESS: local (a Ray on this machine alone), auto (the cluster running here) or the head's "
        "HOST:PORT. A rerun into the same folder writes only the parts not written yet.",
    ),
    part_rows: int = typer.Option(
        100_000, min=1, help="With --ray: rows per output part (each input file is cut into parts of this many rows)."
    ),
) -> None:
    """Label texts with a trained run, from the command line or a file.

    Batches are sorted by length and padded per batch; `lmadapt export` makes the ONNX backends.
    Texts the run's backbone cannot read (more unknown tokens than the run's model.max_unknown_share)
    are refused. A run trained with out-of-scope detection (the config's ood section) answers its
    abstain label (e.g. unknown) for a text out of its scope, and a scored file gets `abstained` and
    `ood_score` columns; --no-abstain answers the best label always.

    Example: lmadapt predict runs/demo-full "great film" --input more.csv --output scored.csv
    """
    import lmadapt
    from lmadapt.inference.predictor import worker_count
    from lmadapt.serving.batch import check_scored_output, predict_file

    if not texts and not input:
        raise LmadaptError("nothing to predict", fix='pass texts ("a great film") or --input FILE --output FILE')
    if input and not output:
        raise LmadaptError("--input needs --output", fix="add --output scored.csv")
    if ray is not None:
        if texts or not input:
            raise LmadaptError(
                "--ray scores --input files only", where="--ray", fix="pass --input DATA --output FOLDER"
            )
        report = lmadapt.predict_on_ray(
            run,
            input,
            output,
            ray,
            text_column=text_column,
            backend=backend,
            batch_size=batch_size,
            abstain=not no_abstain,
            part_rows=part_rows,
        )
        before = f" ({report['parts_before']} written before)" if report["parts_before"] else ""
        console.print(f"{report['rows']} rows scored into {report['parts']} parts{before} -> {output}")
        return
    if input:
        check_scored_output(input, output)  # before the model loads and any text is predicted
    loaded = lmadapt.load(run)
    predictor = loaded.inference(backend, workers=worker_count(workers), batch_size=batch_size)
    started = time.perf_counter()
    if texts:
        for text, result in zip(texts, predictor.predict(texts, abstain=not no_abstain)):
            decided = result.get("label", result.get("labels"))
            best = max(result["scores"], key=result["scores"].get)
            note = f"\t(abstained, {result['reason']}; best label {best})" if result.get("abstained") else ""
            console.print(
                f"{decided}\t{result['scores'][best]:.3f}\t{text}{note}", markup=False, highlight=False, soft_wrap=True
            )
    written = 0
    if input:
        written = predict_file(
            loaded, input, output, text_column=text_column, predictor=predictor, abstain=not no_abstain
        )
        console.print(f"{written} rows scored -> {output}")
    # On stderr: the labels on stdout stay one per line for whoever reads them.
    count, took = len(texts or []) + written, time.perf_counter() - started
    errors.print(f"{count} texts on {predictor.engine.name} in {took:.1f} s ({count / took:.0f} texts/s)")


@app.command()
def merge(
    run: Path = typer.Argument(..., help="Run folder of a lora or ia3 run."),
    output: Path = typer.Option(..., "--output", help="Folder for the standalone merged HF model."),
    tolerance: float = typer.Option(1e-4, help="Largest allowed logit difference between merged and unmerged."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
) -> None:
    """Fold a LoRA or IA3 adapter into its backbone and write a standalone HF model folder.

    The merged model's logits are checked against the adapter's on the run's test data (or fixed
    sentences); the merge is refused when they differ by more than --tolerance.

    Example: lmadapt merge runs/sentiment-minilm-lora --output merged/sentiment
    """
    import lmadapt

    report = lmadapt.merge(run, output, tolerance=tolerance, overwrite=overwrite)
    console.print(
        f"merged into {report['output']}: max logit difference {report['max_abs_logit_difference']:.2e} "
        f"on {report['texts_checked']} texts (tolerance {tolerance:g})"
    )


@app.command()
def export(
    run: Path = typer.Argument(..., help="Run folder written by `lmadapt train`."),
    format: str = typer.Option("onnx", "--format", help="Export format (onnx)."),
    quantize: str | None = typer.Option(
        None,
        help="Also write an int8 graph (dynamic or static quantization, whichever agrees more with PyTorch): int8.",
    ),
    tolerance: float | None = typer.Option(
        None, help="Largest allowed class-probability difference from PyTorch (default 1e-3 float32, 0.5 int8)."
    ),
    min_agreement: float | None = typer.Option(
        None, help="Least share of labels that must agree with PyTorch (default 0.99 float32, 0.97 int8)."
    ),
) -> None:
    """Export a run to ONNX inside its folder (onnx/), for fast CPU inference by predict and serve.

    Each graph is checked against the PyTorch model on the run's test data (max probability
    difference, label agreement, accuracy) and refused, with nothing written, above --tolerance or
    below --min-agreement. For int8, dynamic and static quantization (calibrated on the run's
    validation rows) are both checked and the one whose labels agree more with PyTorch is kept. Then every inference
    path the run has is timed on its texts here; `auto` takes the fastest that agrees with PyTorch.

    Example: lmadapt export runs/sst2-minilm-full --format onnx --quantize int8
    """
    import lmadapt

    if format != "onnx":
        raise LmadaptError(f"unknown export format '{format}'", fix="pass --format onnx")
    loaded = lmadapt.load(run)
    for backend, report in lmadapt.export(
        loaded, quantize=quantize, tolerance=tolerance, min_agreement=min_agreement
    ).items():
        kind = f", {report['quantization']} quantization" if "quantization" in report else ""
        delta = f", accuracy {report['accuracy_delta']:+.2f} points" if "accuracy_delta" in report else ""
        console.print(
            f"{backend}: {run / report['file']} ({report['bytes'] / 1e6:.1f} MB{kind}); on {report['texts_checked']} "
            f"texts labels agree {100 * report['label_agreement']:.1f}%{delta}, max probability difference "
            f"{report['max_probability_difference']:.2e} (tolerance {report['tolerance']:g})"
        )
    measured = loaded.measurement_here()
    if measured is not None:
        speeds = ", ".join(
            f"{path} {found['texts_per_s']:.0f}" if "texts_per_s" in found else f"{path} (not here: {found['error']})"
            for path, found in measured["paths"].items()
        )
        console.print(f"texts/s here ({measured['cpu']}): {speeds}; auto takes {measured['fastest']}")


@app.command()
def serve(
    runs: list[Path] = typer.Argument(..., help="Run folders to serve; each is named by its folder."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (0.0.0.0 exposes the service to the network)."),
    port: int = typer.Option(8000, min=MIN_PORT, max=MAX_PORT, help="Port to listen on."),
    api_key: str | None = typer.Option(
        None, envvar=API_KEY_ENV, help="Require this key (Authorization: Bearer KEY or X-API-Key: KEY)."
    ),
    backend: str = typer.Option(ServiceSettings.backend, help=setting_help("backend")),
    max_texts: int = typer.Option(ServiceSettings.max_texts, min=1, help=setting_help("max_texts")),
    max_chars: int = typer.Option(ServiceSettings.max_chars, min=1, help=setting_help("max_chars")),
    max_body_bytes: int = typer.Option(ServiceSettings.max_body_bytes, min=1, help=setting_help("max_body_bytes")),
    timeout: float = typer.Option(ServiceSettings.timeout_s, min=0.001, help=setting_help("timeout_s")),
    max_batch: int = typer.Option(ServiceSettings.max_batch, min=1, help=setting_help("max_batch")),
    max_wait_ms: float = typer.Option(ServiceSettings.max_wait_ms, min=0, help=setting_help("max_wait_ms")),
    max_delay_ms: float = typer.Option(ServiceSettings.max_delay_ms, min=0, help=setting_help("max_delay_ms")),
    workers: int = typer.Option(ServiceSettings.workers, min=0, help=setting_help("workers")),
    shutdown_timeout: float = typer.Option(30.0, min=0, help="Seconds in-flight requests get to finish on SIGTERM."),
) -> None:
    """Serve runs over HTTP: POST /v1/predict, GET /v1/models, /healthz, /metrics, /docs.

    Concurrent requests for one model share forward passes: each of --workers passes takes the waiting
    texts of the most similar lengths (a text waiting --max-delay-ms goes next). On torch and torch-bf16, runs on the same backbone share
    its weights in memory; an exported graph (onnx, onnx-int8, openvino) holds its own copy.

    Example: lmadapt serve runs/sentiment-lora runs/intent-lora --port 8000
    """
    import lmadapt
    from lmadapt.serving.app import serve_forever

    settings = ServiceSettings(
        api_key=api_key,
        max_texts=max_texts,
        max_chars=max_chars,
        max_body_bytes=max_body_bytes,
        timeout_s=timeout,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_delay_ms=max_delay_ms,
        workers=workers,
        backend=backend,
    )
    application = lmadapt.create_app(runs, settings)
    errors.print(f"serving {', '.join(r.name for r in runs)} on http://{host}:{port} (docs: /docs)")
    serve_forever(application, host, port, shutdown_timeout)


@app.command()
def models() -> None:
    """Backbones that resolve here with no network: packaged aliases, installed or not.

    Example: lmadapt models
    """
    from rich.markup import escape

    from lmadapt.models.packaged import PACKAGED_MODELS

    table = RichTable(title="packaged backbones (any local model folder or hub id works as well)")
    table.add_column("alias", no_wrap=True)  # copied into configs: never broken over lines
    for column in ("kind", "parameters", "installed", "size MB", "licence"):
        table.add_column(column)
    for model in PACKAGED_MODELS.values():
        size = model.disk_bytes()
        table.add_row(
            model.alias,
            model.kind,
            f"{model.parameters / 1e6:.1f}M",
            "yes" if model.installed() else "no",
            f"{size / 2**20:.0f}" if size is not None else "-",
            model.licence,
        )
    console.print(table)
    # Long descriptions as lines of their own: a table this wide is unreadable in an 80-column terminal.
    for model in PACKAGED_MODELS.values():
        install = "" if model.installed() else f"; install: {model.install_command}"
        console.print(
            f"[bold]{model.alias}[/bold]: {escape(model.description)}; languages: {escape(model.languages)}{install}"
        )


@app.command()
def strategies() -> None:
    """Adaptation strategies, their default learning rates and options.

    Example: lmadapt strategies
    """
    import dataclasses

    from lmadapt.strategies import STRATEGIES

    for strategy in STRATEGIES.values():
        rate = f"default lr {strategy.default_learning_rate:g}"
        if strategy.learning_rate_many_classes:
            rate += f" on 2 classes, {strategy.learning_rate_many_classes:g} on 77"
        if strategy.head_learning_rate_many_classes:
            rate += f", head {strategy.head_learning_rate_many_classes:g} on 77"
        console.print(
            f"[bold]{strategy.name}[/bold]: {strategy.summary} ({rate}, warm-up {strategy.default_warmup_ratio:g})"
        )
        for f in dataclasses.fields(strategy.config_class):
            console.print(escape(f"    strategy.{f.name} = {f.default!r}: {f.metadata.get('help', '')}"))
        searched = ", ".join(strategy.search_space) if strategy.search_space else "nothing (it does not train)"
        console.print(escape(f"    `lmadapt tune` searches: {searched}"))


@app.command()
def fewshot(
    config: Path = typer.Argument(..., help="YAML recipe of the few-shot strategy (data, template, verbalizer, ...)."),
    shots: str = typer.Option("8,16,64", help="Shots per class, comma-separated."),
    seeds: int = typer.Option(5, min=1, help="Seeds per shot count (each draws other examples)."),
    strategies: str = typer.Option("", help="Strategies to sweep, comma-separated; default: the config's."),
    zero_shot: str = typer.Option(
        "", "--zero-shot", help="Zero-shot strategies as reference lines, e.g. zeroshot_embed."
    ),
    full: bool = typer.Option(
        True, "--full/--no-full", help="Full fine-tuning on all training rows as a reference line."
    ),
    split: str = typer.Option("test", help="Split the table reports: test or validation."),
    output: Path = typer.Option(
        Path("runs/fewshot"), help="Folder for the runs, fewshot.md/.csv/.json and fewshot.png."
    ),
    set_: list[str] = typer.Option([], "--set", help="Override a config key (repeatable)."),
) -> None:
    """Accuracy against shots per class over seeds, with zero-shot and full fine-tuning as reference lines.

    Example: lmadapt fewshot configs/sentiment/minilm_setfit.yaml --shots 8,16,64 --seeds 5 --zero-shot zeroshot_embed
    """
    import lmadapt
    from lmadapt.compare.fewshot import fewshot_sweep, markdown_table

    if split not in ("test", "validation"):
        raise LmadaptError(f"--split must be test or validation, got '{split}'")
    try:
        counts = [int(k) for k in shots.split(",") if k.strip()]
    except ValueError:
        raise LmadaptError(f"--shots must be whole numbers separated by commas, got '{shots}'") from None
    if not counts or min(counts) < 1:
        raise LmadaptError("--shots needs at least one positive number", fix="e.g. --shots 8,16,64")
    base = lmadapt.load_config(config, set_)
    names = [n.strip() for n in strategies.split(",") if n.strip()] or None
    zero = [n.strip() for n in zero_shot.split(",") if n.strip()]
    result = fewshot_sweep(
        base, output, counts, seeds, names, zero, full, split, progress=lambda name: console.rule(f"training {name}")
    )
    console.print(markdown_table(result.summary, split))
    console.print(f"table, runs and plot in {output} (fewshot.md, fewshot.csv, fewshot.json, fewshot.png)")


@app.command()
def compare(
    config: Path | None = typer.Argument(None, help="YAML recipe giving the data, backbone and seed (or use --data)."),
    data: str | None = typer.Option(None, "--data", help="Training file (or builtin:<name>) when there is no config."),
    backbone: str | None = typer.Option(None, help="Backbone for every strategy (alias, folder or hub id)."),
    strategies: str = typer.Option("head,lora,full", help="Strategies to compare, comma-separated."),
    output: Path = typer.Option(Path("runs/compare"), help="Folder for the runs, rows, leaderboard and plots."),
    max_minutes: float | None = typer.Option(None, min=0.01, help="Time limit per strategy; over it: an error row."),
    total_minutes: float | None = typer.Option(
        None, min=0.01, help="Overall time limit; strategies that could not finish inside it are skipped."
    ),
    max_memory_mb: float | None = typer.Option(None, min=1, help="Your memory limit, for the recommendation."),
    max_train_minutes: float | None = typer.Option(
        None, min=0.01, help="Your training-time limit, for the recommendation."
    ),
    sort: str = typer.Option("accuracy", help="Column the leaderboard is sorted by (each in its better direction)."),
    set_: list[str] = typer.Option(
        [],
        "--set",
        help="Override a config key (repeatable); STRATEGY:key=value for one strategy only, "
        "e.g. setfit:data.shots_per_class=16.",
    ),
    ray: str | None = typer.Option(
        None,
        "--ray",
        metavar="ADDRESS",
        help="Run each strategy as a Ray task, as many at once as the cluster has room for; ADDRESS: local (a Ray "
        "on this machine alone), auto (the cluster running here) or the head's HOST:PORT.",
    ),
    ray_cpus: int | None = typer.Option(
        None,
        min=1,
        help="With --ray: CPUs each strategy's task asks for (default: all of a node's); a GPU too where "
        "the cluster has them.",
    ),
) -> None:
    """Every strategy on the same data, split and seed: one leaderboard of quality, size, time, memory and speed.

    The data is checked first: a data mistake stops it before anything in the output folder changes.
    Each strategy runs in its own process (its own peak memory; a failure is one error row), or with
    --ray in a Ray task of its own (the rows and leaderboard are the same; each strategy's run folder
    is written on the node that trained it). Run it again to pick up where it stopped: strategies
    that finished with the same config are reused.

    Example: lmadapt compare --data reviews.csv --strategies head,bitfit,lora,full --max-minutes 20
    """
    import lmadapt
    from lmadapt.compare.leaderboard import (
        FILES,
        HEADINGS,
        Limits,
        recommend,
        sorted_rows,
        split_settings,
        table_rows,
    )

    if config is None and data is None:
        raise LmadaptError(
            "nothing to compare on", fix="pass a config, or --data FILE (a CSV/JSONL/... with text and label)"
        )
    common, own = split_settings(set_)
    settings = [
        *([f"data.train={data}"] if data else []),
        *([f"model.backbone={backbone}"] if backbone else []),
        *common,
    ]
    base = lmadapt.load_config(config, settings)
    names = [n.strip() for n in strategies.split(",") if n.strip()]
    limits = Limits(max_minutes, total_minutes, max_memory_mb, max_train_minutes)
    rows = lmadapt.compare_strategies(
        base,
        names,
        output,
        limits,
        sort_by=sort,
        progress=lambda text: console.rule(text),
        settings=own,
        ray=ray,
        ray_cpus=ray_cpus,
    )
    table = RichTable(title=f"leaderboard ({output})")
    for heading in HEADINGS:
        table.add_column(heading)
    for cells in table_rows(sorted_rows(rows, sort)):
        table.add_row(*(escape(cell) for cell in cells))
    console.print(table)
    for line in recommend(rows, limits):
        console.print(line)
    console.print(f"in {output}: {', '.join(FILES)}")


@app.command()
def tune(
    config: Path = typer.Argument(..., help="YAML recipe of the strategy to tune (data, backbone, seed, ...)."),
    budget_minutes: float = typer.Option(
        ...,
        "--budget-minutes",
        help="Minutes the whole command may take, final run included: a trial starts only while the time left "
        "covers another trial and the final training, both estimated from the trials' measured times.",
    ),
    trials: int | None = typer.Option(
        None, "--trials", help="Most trials this call runs (default: as the budget allows)."
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        help="Folder of the search (study.db, best.yaml, ...); default: <output_dir>/tune/<name> (runs/tune/<name>).",
    ),
    subset_above: int = typer.Option(
        SUBSET_ABOVE,
        "--subset-above",
        help="Training rows above which trials train on a stratified subset (the final run reads all rows).",
    ),
    subset_rows: int = typer.Option(SUBSET_ROWS, "--subset-rows", help="Training rows of that subset."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set train.max_steps=200 (repeatable)."),
    ray: str | None = typer.Option(
        None,
        "--ray",
        metavar="ADDRESS",
        help="Run the trials as Ray tasks; ADDRESS: local (a Ray on this machine alone), auto (the cluster running "
        "here) or the head's HOST:PORT. The tasks open study.db (SQLite) by its path: --output and the data must "
        "lie where every node sees them under the same path (a cluster on one machine, or a shared filesystem).",
    ),
    ray_cpus: int | None = typer.Option(
        None,
        min=1,
        help="With --ray: CPUs each trial's task asks for (default: all of a node's); a GPU too where the cluster "
        "has them.",
    ),
    parallel: int | None = typer.Option(
        None,
        min=1,
        help="With --ray: most trials at once (default: as many as the cluster has room for at --ray-cpus each).",
    ),
) -> None:
    """Search the strategy's hyperparameters (Optuna: TPE, Hyperband pruning over epochs) for the best validation
    macro-F1, then train the best values on all training rows. The first trial is the recipe without a search: the
    config's values, with what it leaves empty derived from the data as `lmadapt train` derives it.

    Into --output: study.db (run the same command again to resume the search with a new budget), best.yaml (a
    recipe: `lmadapt train best.yaml` reproduces the best), the final run folder, trials.csv,
    optimization_history.png, param_importances.png and report.md. `lmadapt strategies` lists what each strategy
    searches. With --ray the trials run as Ray tasks, several at once (Optuna's ask-and-tell here, each task
    reporting its epochs into study.db and learning there whether it is pruned); the final run trains here.

    Example: lmadapt tune configs/sentiment/minilm_lora.yaml --budget-minutes 60 --trials 20
    """
    import lmadapt

    result = lmadapt.tune(
        lmadapt.load_config(config, set_),
        budget_minutes=budget_minutes,
        trials=trials,
        output=output,
        subset_above=subset_above,
        subset_rows=subset_rows,
        progress=lambda line: console.print(escape(line)),
        ray=ray,
        ray_cpus=ray_cpus,
        parallel=parallel,
    )
    console.print(_metrics_table("lmadapt tune: final run", [(result.run.name, result.run.metrics)]))
    console.print(
        f"{result.completed} trials completed, {result.pruned} pruned, {result.failed} failed; best validation "
        f"macro-F1 {result.best_value:.4f}"
    )
    console.print(f"in {result.folder}: study.db, best.yaml, trials.csv, report.md, plots; final run {result.run.path}")


@app.command()
def continual(
    config: Path = typer.Argument(..., help="YAML recipe with a continual section (the stream) and the strategy."),
    methods: str = typer.Option(
        "", help="Methods to compare, comma-separated: naive, replay, ewc, lwf, joint; default: the config's."
    ),
    overwrite: bool = typer.Option(False, help="Relearn methods whose run folder is already finished."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key (repeatable)."),
) -> None:
    """Learn a stream of experiences with each method; accuracy matrix, forgetting and one comparison table.

    Example: lmadapt continual configs/continual/banking77_ci.yaml --methods naive,replay,joint
    """
    import lmadapt
    from lmadapt.continual.learner import COMPARISON, markdown_table, require_method, run_continual

    names = [n.strip() for n in methods.split(",") if n.strip()]
    for name in names:
        require_method(name, "--methods")
    base = lmadapt.load_config(config, [*set_, *([f"continual.methods={','.join(names)}"] if names else [])])
    results = run_continual(base, overwrite=overwrite, progress=lambda text: console.rule(text))
    console.print(markdown_table(results))
    output = Path(base.output_dir) / base.name
    console.print(f"run folders, {COMPARISON}.md/.json and {COMPARISON}.png in {output}")


@app.command()
def update(
    run: Path = typer.Argument(..., help="A finished run folder (from train, continual or update)."),
    data: str = typer.Option(..., "--data", help="The new labelled data: a file, or builtin:<name>."),
    method: str = typer.Option(
        "", "--method", "--strategy", help="naive, replay, ewc or lwf; default: the run's (replay for a plain run)."
    ),
    name: str = typer.Option("", help="Name of the new run folder, beside the old; default: <run>-<method>-update."),
    overwrite: bool = typer.Option(False, help="Replace a run folder of that name (never the run updated)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key of the run's config (repeatable)."),
    validation: str = typer.Option(
        "", help="A file that measures the new experience during the update; default: a share split off --data."
    ),
    test: str = typer.Option("", help="A file the new experience is tested on; default: a share split off --data."),
) -> None:
    """Learn new data on top of a run without forgetting the old, into a new run folder (the old is untouched).

    Example: lmadapt update runs/intent-full --data new_intents.csv --method replay
    """
    from lmadapt.continual.learner import update_run

    result = update_run(
        run,
        data,
        method=method or None,
        name=name or None,
        overrides=set_,
        overwrite=overwrite,
        progress=lambda text: console.rule(text),
        validation=validation or None,
        test=test or None,
    )
    table = RichTable(title=f"accuracy on each experience after the update ({result.method})")
    for column in ("experience", "before", "after"):
        table.add_column(column)
    for j, experience in enumerate(result.experiences):
        table.add_row(experience, _pct(result.matrix[-2][j]), _pct(result.matrix[-1][j]))
    console.print(table)
    console.print(f"forgetting {_pct(result.metrics['forgetting'])} points; updated run in {result.path}")


@app.command()
def demo(output_dir: str = typer.Option("runs", help="Folder that receives the demo's run folders.")) -> None:
    """Adapt the packaged MiniLM to real movie-review sentiment, offline, beside two baselines.

    Example: lmadapt demo
    """
    import lmadapt
    from lmadapt.demo import EXAMPLES, demo_configs

    finished = []
    for config in demo_configs(output_dir):
        console.rule(f"training {config.name} ({config.strategy_name})")
        run = lmadapt.train(config, overwrite=True)
        finished.append(run)
    console.print(
        _metrics_table(
            "Rotten Tomatoes sentiment (built-in data, same seeded split)",
            [(r.name, r.metrics) for r in finished],
        )
    )
    best = finished[0]
    console.print(f"\npredictions of {best.path}:")
    for text, result in zip(EXAMPLES, best.predict(EXAMPLES)):
        console.print(f"  {result['label']:<9} {max(result['scores'].values()):.3f}  {text}")
    console.print(f'\nnext: lmadapt predict {best.path} "your text"   |   lmadapt evaluate {best.path} --data FILE')


@data_app.command("inspect")
def data_inspect(
    source: str = typer.Argument(
        ..., help="Data file (CSV/TSV/JSONL/Parquet), saved HF dataset folder, or builtin:<name>."
    ),
    against: list[str] = typer.Option([], "--against", help="Other split(s) to check for leaked texts (repeatable)."),
    backbone: list[str] = typer.Option(
        ["minilm"],
        help="Backbone whose tokenizer counts lengths and unknown tokens; repeat it to compare how well several "
        "read the texts (the first counts lengths); 'none' counts words.",
    ),
    text_column: str = typer.Option("text", help="Text column."),
    label_column: str = typer.Option("label", help="Label column."),
    task: str = typer.Option("single_label", help="single_label or multi_label."),
    max_length: int = typer.Option(128, help="Length that would be truncated in training."),
) -> None:
    """Label counts, token-length percentiles, scripts and unknown tokens, duplicates and train/test leaks.

    Example: lmadapt data inspect train.csv --against test.csv --backbone minilm --backbone e5-multilingual
    """
    from lmadapt.config import DataConfig, build_dataclass, check_data_config
    from lmadapt.models.inspect import inspect_data

    config = build_dataclass(
        DataConfig, {"text_column": text_column, "label_column": label_column, "task": task}, "data"
    )
    check_data_config(config)
    backbones = [name for name in backbone if name != "none"]
    report = inspect_data(
        source, config, backbones[0] if backbones else None, against, max_length, other_backbones=backbones[1:]
    )
    console.print(f"[bold]{source}[/bold]: {report['rows']} rows, columns {', '.join(report['columns'])}")
    table = RichTable(title=f"labels ({report['classes']} classes)")
    table.add_column("label")
    table.add_column("rows", justify="right")
    table.add_column("% of texts", justify="right")
    texts = report["rows"] - report["empty_texts"]  # a multi-label text counts under each of its labels
    for label, count in sorted(report["labels"].items(), key=lambda kv: -kv[1]):
        table.add_row(label, str(count), f"{100 * count / texts:.1f}")
    console.print(table)
    if "labels_per_text_mean" in report:
        console.print(
            f"labels per text: {report['labels_per_text_mean']} on average; "
            f"texts without labels: {report['texts_without_labels']}"
        )
    p = report["length_percentiles"]
    console.print(
        f"length ({report['length_unit']}): p50 {p['p50']}, p90 {p['p90']}, p95 {p['p95']}, p99 {p['p99']}, max {p['max']}"
    )
    scripts = ", ".join(f"{name} {_pct(share)}%" for name, share in report["scripts"].items())
    console.print(f"letters by script: {scripts or 'none'}")
    for name, share in report["unknown_share"].items():
        console.print(f"unknown tokens for {name}: {_pct(share)}%")
    if "truncated_share" in report:
        console.print(f"longer than max_length {report['max_length']}: {_pct(report['truncated_share'])}%")
    console.print(
        f"empty texts: {report['empty_texts']}; repeated texts: {report['duplicates']}; texts with conflicting labels: {report['conflicting_labels']}"
    )
    for other, count in report["leaks"].items():
        console.print(f"texts also in {other}: {count}")


@app.command()
def keys(
    prefix: str | None = typer.Argument(None, help="A section (data, model, strategy, train, continual) or a key."),
) -> None:
    """Every config key a recipe or --set can give: its type, default and help, by section.

    Example: lmadapt keys data
    """
    import lmadapt

    print_keys(lmadapt.config_keys(prefix))


@support_app.command("keys")
def support_keys(prefix: str | None = typer.Argument(None, help="A section (history, intent, policy, ...) or a key.")):
    """Every key a support recipe or --set can give: its type, default and help, by section.

    Example: lmadapt support keys policy
    """
    from lmadapt.apps.support.config import support_keys as keys_of_support

    print_keys(keys_of_support(prefix))


@monitor_app.command("keys")
def monitor_keys(prefix: str | None = typer.Argument(None, help="A section (input, labels, detection, ...) or a key.")):
    """Every key a monitor config or --set can give: its type, default and help, by section.

    Example: lmadapt monitor keys detection
    """
    from lmadapt.apps.monitor.config import monitor_keys as keys_of_monitor

    print_keys(keys_of_monitor(prefix))


@recommend_app.command("keys")
def recommend_keys(
    prefix: str | None = typer.Argument(None, help="A section (data, evaluation, a model such as text) or a key."),
):
    """Every key a recommender recipe or --set can give: its type, default and help, by section.

    Example: lmadapt recommend keys text
    """
    from lmadapt.apps.recommend.config import recommend_keys as keys_of_recommend

    print_keys(keys_of_recommend(prefix))


def print_keys(keys) -> None:
    import textwrap

    section = None
    for key in keys:
        heading = key.key.split(".")[0] if "." in key.key else "top-level"
        if heading != section:
            section = heading
            console.print(f"\n[bold]{section}[/bold]")
        console.print(escape(f"  {key.key} ({key.type}; default: {_yaml_value(key.default)})"), overflow="fold")
        # Indented below the key by textwrap: rich's Padding would pad each line with spaces to the full width.
        console.print(escape(textwrap.fill(key.help, console.width, initial_indent=" " * 6, subsequent_indent=" " * 6)))


def _yaml_value(value: object) -> str:
    """A default as a recipe writes it."""
    if value is None:
        return "empty"
    return yaml.safe_dump(value, default_flow_style=True, width=1_000).removesuffix("\n...\n").strip()


# Usage errors come from click or, in typer >= 0.24, from typer's own vendored copy of it.
USAGE_ERRORS = (click.exceptions.ClickException, typer.TyperException)
ABORTS = (click.exceptions.Abort, typer.Abort)
INTERRUPTED = 130  # the shell's code for a run stopped by Ctrl-C (128 + SIGINT)


def _interrupted() -> None:
    # Only `lmadapt train` keeps checkpoints to resume from; other commands start again.
    resume = "; continue training with `lmadapt train CONFIG --resume`" if sys.argv[1:2] == ["train"] else ""
    errors.print(
        "interrupted: nothing half-written is left (run folders and exports are only written when complete)" + resume
    )
    sys.exit(INTERRUPTED)


def main() -> None:
    """Entry point: user errors print in a line or two and exit 2; --debug shows the traceback."""
    try:
        # typer turns Ctrl-C into an exit code it returns (130) when it does not exit itself.
        if app(standalone_mode=False, prog_name="lmadapt") == INTERRUPTED:
            _interrupted()
    except USAGE_ERRORS as error:
        error.show()
        sys.exit(error.exit_code)
    except ABORTS:
        errors.print("aborted")
        sys.exit(INTERRUPTED)
    except LmadaptError as error:
        if os.environ.get("LMADAPT_DEBUG"):
            raise
        errors.print(Text("error: ", style="bold red") + Text(error.render()), soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        _interrupted()


if __name__ == "__main__":
    main()
