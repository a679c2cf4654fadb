"""`lmadapt compare`: every listed strategy on the same split with the same seed, one leaderboard.

Each strategy trains and is measured in a subprocess of its own (lmadapt.compare.worker), so its
peak memory is its own and its failure is one error row, not the end of the comparison. Finished
rows are kept under <output>/rows/ with the config they ran, so an interrupted comparison picks up
where it stopped (failed and skipped strategies, and any whose config changed, run again). Settings
for one strategy only (`incontext:strategy.demonstrations=8`) change that strategy's config alone.
A per-strategy time limit stops a strategy that runs over it; an overall limit skips the strategies
that could not finish inside what is left of it. The data is read and checked once, before any
strategy starts: a data mistake stops the comparison with its message, and an earlier leaderboard in
the output folder stays as it was.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lmadapt.cluster import check_ray_options
from lmadapt.compare.fewshot import check_data, variant
from lmadapt.compare.report import html_report
from lmadapt.config import RunConfig, apply_overrides
from lmadapt.errors import LmadaptError
from lmadapt.evaluation.plots import plot_quality_against_cost
from lmadapt.recipe import parse_config
from lmadapt.runs import write_text_atomic
from lmadapt.strategies import get_strategy

# The leaderboard's columns: (name, heading, higher is better); rows sort on any of them.
COLUMNS = [
    ("accuracy", "accuracy %", True),
    ("macro_f1", "macro-F1 %", True),
    ("trainable_params", "trainable params", False),
    ("trainable_pct", "trainable %", False),
    ("train_s", "train s", False),
    ("peak_rss_mb", "peak RSS MB", False),
    ("artifact_mb", "artifact MB", False),
    ("texts_per_s", "texts/s", True),
    ("latency_ms", "latency ms/text", False),
]
SORTABLE = [name for name, _, _ in COLUMNS]
FILES = (
    "leaderboard.md",
    "leaderboard.csv",
    "leaderboard.json",
    "leaderboard.html",
    "quality_vs_trainable.png",
    "quality_vs_time.png",
)


@dataclass
class Limits:
    """What the user allows: a run budget (per strategy and overall) and limits the recommendation respects."""

    minutes_per_strategy: float | None = None
    total_minutes: float | None = None
    memory_mb: float | None = None
    train_minutes: float | None = None


def _finished(row: dict) -> bool:
    return "error" not in row and "skipped" not in row


def split_settings(items: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """`--set` items for every strategy (`train.epochs=3`) and for one (`setfit:data.shots_per_class=16`)."""
    common: list[str] = []
    own: dict[str, list[str]] = {}
    for item in items:
        key = item.split("=", 1)[0]
        if ":" in key:
            strategy, setting = item.split(":", 1)
            own.setdefault(strategy.strip(), []).append(setting)
        else:
            common.append(item)
    return common, own


def strategy_configs(
    base: RunConfig, strategies: list[str], output: Path, settings: dict[str, list[str]] | None = None
) -> list[RunConfig]:
    """Each strategy's config: `base` on its own defaults, plus the settings given for it alone."""
    settings = settings or {}
    for name in settings:
        if name not in strategies:
            raise LmadaptError(
                f"settings given for '{name}', which is not compared",
                where="--set",
                fix=f"prefix a setting with one of {', '.join(strategies)} (e.g. {strategies[0]}:train.epochs=3)",
            )
    configs = []
    for name in strategies:
        config = variant(base, name, name=name, output_dir=str(output / "runs"))
        if settings.get(name):
            config = parse_config(apply_overrides(config.to_dict(), settings[name]))
        configs.append(config)
    return configs


def _reusable(rows_folder: Path, config: RunConfig) -> dict | None:
    """The strategy's row from an earlier comparison, if it finished with this very config."""
    row_file, config_file = rows_folder / f"{config.name}.json", rows_folder / f"{config.name}.config.json"
    if not (row_file.is_file() and config_file.is_file()):
        return None
    same = json.loads(config_file.read_text()) == json.loads(json.dumps(config.to_dict()))
    row = {"strategy": config.name} | json.loads(row_file.read_text())  # the worker's row, if the comparison stopped
    return row if same and _finished(row) else None


def _start_row(config: RunConfig, folder: Path) -> tuple[Path, Path]:
    """The strategy's config file written (what its row will be of) and its old row removed."""
    folder.mkdir(parents=True, exist_ok=True)
    config_file, row_file = folder / f"{config.name}.config.json", folder / f"{config.name}.json"
    write_text_atomic(config_file, json.dumps(config.to_dict(), indent=2) + "\n")
    row_file.unlink(missing_ok=True)
    return config_file, row_file


def _over_time(limit_s: float) -> dict:
    return {"error": f"stopped at its time limit ({limit_s / 60:.1f} min)", "wall_s": round(limit_s, 1)}


def run_strategy(config: RunConfig, folder: Path, limit_s: float | None) -> dict:
    """Train and measure one strategy in a subprocess; its row, or an error row."""
    config_file, row_file = _start_row(config, folder)
    command = [sys.executable, "-m", "lmadapt.compare.worker", str(config_file), str(row_file)]
    started = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit_s)
    except subprocess.TimeoutExpired:
        return _over_time(limit_s)
    if row_file.is_file():
        return json.loads(row_file.read_text())
    return {
        "error": failure_reason(done.returncode, done.stderr or "")[:500],
        "wall_s": round(time.monotonic() - started, 1),
    }


def failure_reason(returncode: int, stderr: str) -> str:
    """Why a worker ended without writing a row (its errors are rows): a crash before it could, or a signal."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if lines and "Traceback (most recent call last)" in stderr:
        return lines[-1]  # the exception
    if returncode < 0:
        name = signal.Signals(-returncode).name
        return f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    return f"exit code {returncode}" + (f"; last output: {lines[-1]}" if lines else "")


def compare(
    base: RunConfig,
    strategies: list[str],
    output: Path,
    limits: Limits | None = None,
    sort_by: str = "accuracy",
    progress: Callable[[str], None] = print,
    settings: dict[str, list[str]] | None = None,
    ray: str | None = None,
    ray_cpus: int | None = None,
) -> list[dict]:
    """Run every strategy on `base`'s data, split and seed (plus `settings` for one strategy alone, by its
    name); write the leaderboard files into `output`. With `ray` (an address, see lmadapt.cluster.connect) the
    strategies run as Ray tasks (`run_strategies_on_ray`, `ray_cpus` CPUs each), their rows kept as locally."""
    limits = limits or Limits()
    check_sort(sort_by)
    check_ray_options(ray, ray_cpus=ray_cpus)
    if not strategies:
        raise LmadaptError("no strategies to compare", fix="e.g. --strategies head,lora,full")
    strategies = list(dict.fromkeys(strategies))  # each once, in the order given
    for name in strategies:
        get_strategy(name)  # an unknown name fails before anything runs
    configs = strategy_configs(base, strategies, output, settings)
    check_data(configs)  # nothing in `output` is touched if the data cannot be read
    rows_folder = output / "rows"
    started = time.monotonic()
    found: dict[str, dict] = {}
    pending = []
    for config in configs:
        if previous := _reusable(rows_folder, config):
            progress(f"{config.name}: finished before, reused")
            found[config.name] = previous | {"reused": True}
        else:
            pending.append(config)
    if ray is None:
        for config in pending:
            limit_s, skipped = time_limit(limits, time.monotonic() - started)
            if skipped:
                found[config.name] = _skipped(config, skipped, progress)
                continue
            progress(f"{config.name}: training and measuring")
            found[config.name] = _kept(config, run_strategy(config, rows_folder, limit_s), rows_folder)
    else:
        for config, row in run_strategies_on_ray(pending, rows_folder, limits, started, progress, ray, ray_cpus):
            found[config.name] = _kept(config, row, rows_folder)
    rows = [found[config.name] for config in configs]
    mark_pareto(rows)
    write_leaderboard(rows, output, limits, sort_by)
    return rows


def _skipped(config: RunConfig, why: str, progress: Callable[[str], None]) -> dict:
    progress(f"{config.name}: skipped, {why}")
    return {"strategy": config.name, "skipped": why}


def _kept(config: RunConfig, row: dict, rows_folder: Path) -> dict:
    """The strategy's row, saved under rows/ for the next comparison if it finished (removed if it failed)."""
    row = {"strategy": config.name} | row
    if "skipped" in row:
        return row
    saved = rows_folder / f"{config.name}.json"
    if _finished(row):
        write_text_atomic(saved, json.dumps(row, indent=2) + "\n")  # reused by the next comparison
    else:
        saved.unlink(missing_ok=True)
    return row


def run_strategies_on_ray(
    pending: list[RunConfig],
    rows_folder: Path,
    limits: Limits,
    started: float,
    progress: Callable[[str], None],
    address: str,
    cpus: int | None = None,
):
    """Each strategy as a Ray task (the worker's `measured_row`, in a fresh worker process: its peak memory its
    own), as many at once as the cluster has room for: `cpus` CPUs each (default all of a node's) and a GPU where
    the cluster has them. Yields (config, row) as they finish; the time limits are the local ones, counted from
    each task's start, and a task over its limit is cancelled."""
    from lmadapt.cluster import connect, task_resources
    from lmadapt.compare.worker import measured_row

    ray = connect(address)
    cpus, gpus, slots = task_resources(cpus)
    task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_calls=1)(measured_row)
    queue, running = list(pending), {}
    while queue or running:
        while queue and len(running) < slots:
            config = queue.pop(0)
            limit_s, skipped = time_limit(limits, time.monotonic() - started)
            if skipped:
                yield config, _skipped(config, skipped, progress)
                continue
            _start_row(config, rows_folder)
            progress(f"{config.name}: training and measuring on Ray")
            deadline = time.monotonic() + limit_s if limit_s else None
            running[task.remote(config.to_dict(), cpus)] = (config, deadline, limit_s)
        deadlines = [deadline for _, deadline, _ in running.values() if deadline is not None]
        wait_s = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        ready, _ = ray.wait(list(running), num_returns=1, timeout=wait_s)
        for ref in ready:
            config, _, _ = running.pop(ref)
            try:
                yield config, ray.get(ref)
            except ray.exceptions.RayError as error:  # the worker died (killed for memory, say): an error row
                yield config, {"error": str(error).strip().splitlines()[-1][:500]}
        for ref, (config, deadline, limit_s) in list(running.items()):
            if deadline is not None and time.monotonic() >= deadline:
                ray.cancel(ref, force=True)
                del running[ref]
                yield config, _over_time(limit_s)


def time_limit(limits: Limits, elapsed_s: float) -> tuple[float | None, str | None]:
    """Seconds the next strategy may take, or why it is skipped: it could not finish in the overall budget."""
    per = limits.minutes_per_strategy * 60 if limits.minutes_per_strategy else None
    if limits.total_minutes is None:
        return per, None
    left = limits.total_minutes * 60 - elapsed_s
    if left <= 0:
        return None, f"the overall budget of {limits.total_minutes:g} min is spent"
    if per is not None and left < per:
        return None, f"{left / 60:.1f} min of the overall budget left, less than the {per / 60:g} min it may take"
    return (left if per is None else per), None


def pareto_front(points: list[tuple[float, float]]) -> set[int]:
    """Indices of the points no other point beats: lower or equal cost and higher or equal quality, one strictly."""
    front = set()
    for i, (cost, quality) in enumerate(points):
        dominated = any(
            c <= cost and q >= quality and (c < cost or q > quality) for j, (c, q) in enumerate(points) if j != i
        )
        if not dominated:
            front.add(i)
    return front


def mark_pareto(rows: list[dict]) -> None:
    """`pareto_params` / `pareto_time`: the row is on the front of accuracy against trainable % / train time."""
    done = [row for row in rows if _finished(row)]
    for flag, cost in (("pareto_params", "trainable_pct"), ("pareto_time", "train_s")):
        front = pareto_front([(row[cost], row["accuracy"]) for row in done])
        for i, row in enumerate(done):
            row[flag] = i in front


def recommend(rows: list[dict], limits: Limits) -> list[str]:
    """The best strategy for quality, and the best within the user's memory and training-time limits."""
    done = sorted((row for row in rows if _finished(row)), key=lambda r: (-r["accuracy"], r["train_s"]))
    if not done:
        return ["no strategy finished: nothing to recommend"]
    best = done[0]
    lines = [f"best quality: {best['strategy']} ({100 * best['accuracy']:.2f}% accuracy)"]
    stated = []
    if limits.memory_mb is not None:
        stated.append((f"{limits.memory_mb:g} MB peak memory", lambda r: r["peak_rss_mb"] <= limits.memory_mb))
    if limits.train_minutes is not None:
        stated.append((f"{limits.train_minutes:g} min training", lambda r: r["train_s"] <= 60 * limits.train_minutes))
    if stated:
        within = [r for r in done if all(fits(r) for _, fits in stated)]
        limit_text = " and ".join(text for text, _ in stated)
        lines.append(
            f"best within {limit_text}: {within[0]['strategy']} ({100 * within[0]['accuracy']:.2f}% accuracy)"
            if within
            else f"no strategy stays within {limit_text}"
        )
    return lines


def check_sort(by: str) -> None:
    if by not in SORTABLE:
        raise LmadaptError(f"cannot sort by '{by}'", fix=f"use one of {', '.join(SORTABLE)}")


def sorted_rows(rows: list[dict], by: str = "accuracy") -> list[dict]:
    """Finished rows best first by `by` (its own direction), then failed and skipped ones."""
    check_sort(by)
    higher = next(better for name, _, better in COLUMNS if name == by)
    done = sorted((r for r in rows if _finished(r)), key=lambda r: r[by], reverse=higher)
    return done + [r for r in rows if not _finished(r)]


def _cell(row: dict, name: str) -> str:
    value = row.get(name)
    if value is None:
        return "-"
    if name in ("accuracy", "macro_f1"):
        return f"{100 * value:.2f}"
    if name == "trainable_params":
        return f"{value:,}"
    return f"{value:.3g}" if name == "trainable_pct" else f"{value:.1f}"


def table_rows(rows: list[dict]) -> list[list[str]]:
    """The leaderboard as text cells: strategy, every column, Pareto marks, status."""
    cells = []
    for row in rows:
        status = row.get("error") and f"error: {row['error']}" or row.get("skipped") and f"skipped: {row['skipped']}"
        marks = "".join(mark for flag, mark in (("pareto_params", "P"), ("pareto_time", "T")) if row.get(flag))
        cells.append([row["strategy"], *(_cell(row, name) for name, _, _ in COLUMNS), marks, status or "ok"])
    return cells


HEADINGS = ["strategy", *(heading for _, heading, _ in COLUMNS), "Pareto", "status"]


def markdown(rows: list[dict], advice: list[str]) -> str:
    lines = ["| " + " | ".join(HEADINGS) + " |", "|" + "---|" * len(HEADINGS)]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(rows)]
    legend = "Pareto: P on the front of accuracy against trainable %, T against training time."
    return "\n".join(lines) + f"\n\n{legend}\n\n" + "\n".join(f"- {line}" for line in advice) + "\n"


def write_leaderboard(rows: list[dict], output: Path, limits: Limits, by: str = "accuracy") -> None:
    """leaderboard.md/.csv/.json/.html and the two plots into `output`."""
    import pandas as pd

    output.mkdir(parents=True, exist_ok=True)
    ordered = sorted_rows(rows, by)
    advice = recommend(rows, limits)
    write_text_atomic(output / "leaderboard.json", json.dumps({"rows": ordered, "advice": advice}, indent=2) + "\n")
    write_text_atomic(output / "leaderboard.md", markdown(ordered, advice))
    write_text_atomic(output / "leaderboard.csv", pd.DataFrame(ordered).to_csv(index=False))
    plots = [output / "quality_vs_trainable.png", output / "quality_vs_time.png"]
    plot_quality_against_cost(
        ordered, "trainable_pct", "trainable parameters (%)", "pareto_params", plots[0], "accuracy against size"
    )
    plot_quality_against_cost(ordered, "train_s", "training time (s)", "pareto_time", plots[1], "accuracy against time")
    report = html_report("lmadapt compare", HEADINGS, table_rows(ordered), advice, plots)
    write_text_atomic(output / "leaderboard.html", report)
