"""The few-shot sweep: strategies x shots per class x seeds, each a real run folder; a table of the
mean and standard deviation over seeds, and a plot of accuracy against shots per class with the
zero-shot and full fine-tuning results as reference lines.

Few-shot protocol: runs that train do not select epochs on validation (train.select_best=false),
because the validation split is often the evaluation set. A sweep picks up where it stopped:
finished run folders are read, not retrained. Its data is read and checked before any run starts,
so a data mistake stops the sweep with its message and leaves the output folder as it was.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from lmadapt.config import RunConfig
from lmadapt.data.prepare import prepare_data
from lmadapt.errors import LmadaptError
from lmadapt.evaluation.plots import plot_shots_curve
from lmadapt.recipe import parse_config
from lmadapt.runs import load_run, write_text_atomic
from lmadapt.strategies import get_strategy
from lmadapt.training.engine import train


@dataclass
class SweepResult:
    rows: list[dict] = field(default_factory=list)  # one per run
    summary: list[dict] = field(default_factory=list)  # one per (strategy, shots): mean and std over seeds


def variant(base: RunConfig, strategy: str, **changes) -> RunConfig:
    """`base` with another strategy (keeping the options both share, e.g. template and verbalizer) and changes."""
    raw = base.to_dict()
    wanted = get_strategy(strategy).config_class
    names = {f.name for f in dataclasses.fields(wanted)}
    raw["strategy"] = {"name": strategy, **{k: v for k, v in raw["strategy"].items() if k in names}}
    # The strategy's own defaults, unless the user chose otherwise: another strategy's default backbone or
    # learning rate (a full fine-tuning recipe's 1e-4) would handicap it (LoRA wants 1e-3, a head 2e-3).
    base_strategy = get_strategy(base.strategy_name)
    if raw["model"]["backbone"] == base_strategy.default_backbone:
        raw["model"]["backbone"] = None
    if raw["train"]["learning_rate"] == base_strategy.default_learning_rate:
        raw["train"]["learning_rate"] = None
    for dotted, value in changes.items():
        section, key = dotted.split(".") if "." in dotted else (None, dotted)
        (raw[section] if section else raw)[key] = value
    return parse_config(raw)


def check_data(configs: list[RunConfig]) -> None:
    """Read and check each distinct data setting of `configs` once, as a training run does, before any of them
    starts: a data mistake is one LmadaptError (what, where, fix), not an error row per run."""
    checked = set()
    for config in configs:
        key = json.dumps(dataclasses.asdict(config.data), sort_keys=True)
        if key not in checked:  # a seed only changes which rows are drawn, not whether the data can be read
            checked.add(key)
            prepare_data(config.data, config.seed)


def error_text(error: LmadaptError) -> str:
    """An error row's text: the error as the CLI shows it (where: what; fix: ...), on one line."""
    return error.render().replace("\n ", ";")


def _figures(run, split: str) -> dict:
    metrics = run.metrics
    return {
        "accuracy": metrics[split]["accuracy"],
        "macro_f1": metrics[split]["macro_f1"],
        "train_s": metrics["training"].get("runtime_s", 0.0),
        "wall_s": metrics.get("wall_time_s", 0.0),
    }


def _run(config: RunConfig, split: str, progress) -> dict:
    folder = Path(config.output_dir) / config.name
    if (folder / "manifest.json").is_file():
        return _figures(load_run(folder), split)
    progress(f"{config.name}")
    started = time.perf_counter()
    try:
        run = train(config, overwrite=True)
    except LmadaptError as error:
        return {"error": error_text(error), "wall_s": round(time.perf_counter() - started, 1)}
    return _figures(run, split)


def fewshot_sweep(
    base: RunConfig,
    output: Path,
    shots: list[int],
    seeds: int,
    strategies: list[str] | None = None,
    zero_shot: list[str] | None = None,
    full: bool = True,
    split: str = "test",
    progress=print,
) -> SweepResult:
    """Train every (strategy, shots, seed) run under `output`/runs and summarise them there."""
    strategies = strategies or [base.strategy_name]
    runs = output / "runs"
    result = SweepResult()
    plan = []
    for strategy in strategies:
        uses_trainer = get_strategy(strategy).uses_trainer
        for k in shots:
            for offset in range(seeds):
                changes = {"data.shots_per_class": k, "seed": base.seed + offset}
                if uses_trainer:
                    changes |= {"train.select_best": False, "train.early_stopping_patience": None}
                plan.append((strategy, k, offset, changes))
    for strategy in zero_shot or []:
        plan.append((strategy, 0, 0, {"seed": base.seed}))
    if full:
        plan.append(("full", None, 0, {"seed": base.seed}))
    configs = []
    for strategy, k, offset, changes in plan:
        name = f"{strategy}-k{k}-s{offset}" if k else (f"{strategy}-zero-shot" if k == 0 else f"{strategy}-all")
        configs.append((strategy, k, variant(base, strategy, name=name, output_dir=str(runs), **changes)))
    check_data([config for _, _, config in configs])
    for strategy, k, config in configs:
        row = {"strategy": strategy, "shots": k, "seed": config.seed, "run": config.name}
        result.rows.append(row | _run(config, split, progress))
    result.summary = summarise(result.rows)
    write_outputs(result, output, split)
    return result


def summarise(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["strategy"], row["shots"]), []).append(row)
    summary = []
    for (strategy, shots), members in groups.items():
        done = [r for r in members if "error" not in r]
        accuracies = [r["accuracy"] for r in done]
        summary.append(
            {
                "strategy": strategy,
                "shots": shots,
                "seeds": len(done),
                "errors": [r["error"] for r in members if "error" in r],
                "accuracy": statistics.fmean(accuracies) if accuracies else None,
                "accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
                "macro_f1": statistics.fmean(r["macro_f1"] for r in done) if done else None,
                "train_s": statistics.fmean(r["train_s"] for r in done) if done else None,
            }
        )
    return summary


def _shots_text(shots) -> str:
    return "all" if shots is None else "0" if shots == 0 else str(shots)


def markdown_table(summary: list[dict], split: str) -> str:
    lines = [
        f"| strategy | shots per class | seeds | {split} accuracy (mean ± std) | macro-F1 | train s |",
        "|---|---|---|---|---|---|",
    ]
    for s in summary:
        accuracy = (
            "failed: " + s["errors"][0]
            if s["accuracy"] is None
            else f"{100 * s['accuracy']:.2f} ± {100 * s['accuracy_std']:.2f}"
        )
        f1 = "-" if s["macro_f1"] is None else f"{100 * s['macro_f1']:.2f}"
        seconds = "-" if s["train_s"] is None else f"{s['train_s']:.0f}"
        lines.append(f"| {s['strategy']} | {_shots_text(s['shots'])} | {s['seeds']} | {accuracy} | {f1} | {seconds} |")
    return "\n".join(lines) + "\n"


def write_outputs(result: SweepResult, output: Path, split: str) -> None:
    import pandas as pd

    output.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        output / "fewshot.json", json.dumps({"runs": result.rows, "summary": result.summary}, indent=2) + "\n"
    )
    write_text_atomic(output / "fewshot.md", markdown_table(result.summary, split))
    frame = pd.DataFrame([{k: v for k, v in s.items() if k != "errors"} for s in result.summary])
    frame.to_csv(output / "fewshot.csv", index=False)
    plot_shots_curve(result.summary, output / "fewshot.png", f"accuracy against shots per class ({split})")
