"""Recipes against each other on MiniLM: hand-tuned, a learning-rate grid, the defaults derived from the data, and a
search with `lmadapt tune`.

    python bench/tune.py --recipes grid --datasets fpb50 r8 newsgroups20      # the measurements behind the rules
    python bench/tune.py --recipes hand derived --datasets banking77 sst2     # hand-tuned against derived defaults
    python bench/tune.py --recipes derived tuned --datasets r52               # kept aside: defaults against a search

Datasets (MiniLM, max length 128, seed 42; the figure of record is test accuracy, except SST-2's validation
accuracy, the foundation benchmark's protocol):
  sst2          2 classes, the seeded 20,000-row training subset (bench/runner.py)
  banking77     77 intents, 8,999 training rows (10% of train for validation), official test split
  fpb50         Financial PhraseBank 50agree, 3 classes, its train/validation/test files
  r8            Reuters R8, 8 topics, 10% of train for validation, official test split
  newsgroups20  20 Newsgroups, 20 groups, long posts (truncated at 128 tokens), by-date test split
  r52           Reuters R52, 52 topics: KEPT ASIDE, never read while the rules were made

Recipes (each for full and lora unless said):
  grid     full at learning rates 1e-4 and 2e-4 (the hand recipes' two rates); lora at 2e-3 with the head at the
           same rate and at 1e-2 (Banking77: 89.78 and 92.77). Epochs hold the hand recipes' budget of about 1,300
           optimizer steps (batch 32; 2 to 10 epochs), with early stopping on validation macro-F1 (patience 2).
  hand     the PEFT benchmark's hand-tuned recipes (bench/peft_strategies.py): full 1e-4 on SST-2 (2 epochs),
           2e-4 on Banking77 (5 epochs); lora 1e-3 on SST-2, 2e-3 with the head at 1e-2 on Banking77.
  derived  nothing but the strategy: epochs, learning rate and head rate derived from the data
           (lmadapt.training.defaults).
  tuned    `lmadapt tune` with --budget-minutes (default 30) for the whole search and its final run; the row's
           accuracy is the final run's.

Rows go to bench/results/tune.json, keyed by dataset, recipe, settings and seed; a rerun replaces its own rows and
keeps the others. Each row has `accuracy` (the figure of record), `minutes`, commit and command.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from runner import ROOT, git_commit, run_lmadapt, run_row, run_settings, write_sst2_subset

OUT = ROOT / "bench" / "results" / "tune.json"
STEPS_BUDGET = 1300  # optimizer steps of the hand recipes: SST-2 2 x 625, Banking77 5 x 282
BATCH = 32
TRAIN_ROWS = {"sst2": 20000, "banking77": 8999, "fpb50": 3876, "r8": 4936, "newsgroups20": 10163, "r52": 5878}
FULL_RATES = ("1e-4", "2e-4")
LORA_RATES = ("2e-3",)
HAND = {
    ("sst2", "full"): ["train.epochs=2", "train.learning_rate=1e-4"],
    ("banking77", "full"): ["train.epochs=5", "train.learning_rate=2e-4"],
    ("sst2", "lora"): ["train.epochs=2", "train.learning_rate=1e-3"],
    ("banking77", "lora"): ["train.epochs=5", "train.learning_rate=2e-3", "train.head_learning_rate=1e-2"],
}


def grid_epochs(dataset: str) -> int:
    steps_per_epoch = math.ceil(TRAIN_ROWS[dataset] / BATCH)
    return min(10, max(2, round(STEPS_BUDGET / steps_per_epoch)))


def grid(dataset: str) -> list[tuple[str, list[str]]]:
    """(settings label, overrides) of every grid point on `dataset`, full's first."""
    epochs = f"train.epochs={grid_epochs(dataset)}"
    points = [(f"full lr={rate}", ["strategy.name=full", epochs, f"train.learning_rate={rate}"]) for rate in FULL_RATES]
    for rate in LORA_RATES:
        for head in (None, "1e-2"):
            settings = ["strategy.name=lora", epochs, f"train.learning_rate={rate}"]
            settings += [f"train.head_learning_rate={head}"] if head else []
            points.append((f"lora lr={rate} head={head or rate}", settings))
    return points


def plan(datasets: list[str], recipes: list[str], budget_minutes: float) -> list[tuple[str, str, str, list[str]]]:
    """(dataset, recipe, settings label, overrides) in the order they run."""
    planned = []
    for dataset in datasets:
        if "hand" in recipes:
            for (name, strategy), settings in HAND.items():
                if name == dataset:
                    planned.append((dataset, "hand", f"{strategy} hand", [f"strategy.name={strategy}", *settings]))
        if "grid" in recipes:
            planned += [(dataset, "grid", label, settings) for label, settings in grid(dataset)]
        for strategy in ("full", "lora"):
            if "derived" in recipes:
                planned.append((dataset, "derived_defaults", f"{strategy} derived", [f"strategy.name={strategy}"]))
            if "tuned" in recipes:
                label = f"{strategy} tuned {budget_minutes:g} min"
                planned.append((dataset, "tuned", label, [f"strategy.name={strategy}"]))
    return planned


def child(args) -> None:
    import lmadapt

    overrides = json.loads(args.child)
    if args.recipe != "tuned":
        row = run_lmadapt(args.dataset, args.recipe, overrides, args.data, args.workdir, args.seed)
    else:
        settings = run_settings(args.dataset, "tuned", overrides, args.data, args.workdir, args.seed)
        config = lmadapt.load_config(None, settings)
        output = args.workdir / f"tune-{args.dataset}-{config.strategy_name}"
        found = lmadapt.tune(config, budget_minutes=args.budget_minutes, output=output)
        row = run_row(found.run, args.dataset, settings)
        row |= {"trials": {"completed": found.completed, "pruned": found.pruned, "failed": found.failed}}
        row |= {"best_params": found.best_params, "best_validation_macro_f1": round(found.best_value, 4)}
    print("ROW " + json.dumps(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--datasets", nargs="+", default=["fpb50", "r8", "newsgroups20"], choices=sorted(TRAIN_ROWS))
    parser.add_argument("--recipes", nargs="+", default=["grid"], choices=["grid", "hand", "derived", "tuned"])
    parser.add_argument("--budget-minutes", type=float, default=30.0, help="the tuned recipe's whole search")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--force", action="store_true", help="rerun rows that are already in --out")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", default="", help=argparse.SUPPRESS)
    parser.add_argument("--recipe", default="", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    command_line = "python " + " ".join(sys.argv)
    with tempfile.TemporaryDirectory() as workdir:
        write_sst2_subset(args.data, Path(workdir) / "sst2_train_subset.csv")
        for dataset, recipe, label, settings in plan(args.datasets, args.recipes, args.budget_minutes):
            key = (dataset, recipe, label, args.seed)
            if not args.force and any((r["dataset"], r["recipe"], r["settings"], r["seed"]) == key for r in rows):
                print(f"== {dataset} / {label}: measured before, kept", flush=True)
                continue
            print(f"== {dataset} / {label}", flush=True)
            started = time.time()
            command = [sys.executable, sys.argv[0], "--data", str(args.data), "--dataset", dataset]
            command += ["--workdir", workdir, "--seed", str(args.seed), "--recipe", recipe]
            command += ["--budget-minutes", str(args.budget_minutes), "--child", json.dumps(settings)]
            done = subprocess.run(command, capture_output=True, text=True)
            found = [line for line in done.stdout.splitlines() if line.startswith("ROW ")]
            if done.returncode != 0 or not found:
                print(done.stderr[-3000:], flush=True)
                continue
            measured = json.loads(found[-1][4:])
            of_record = "accuracy" if dataset == "sst2" else "test_accuracy"
            row = {
                "dataset": dataset,
                "strategy": measured["strategy"],
                "recipe": recipe,
                "settings": label,
                "seed": args.seed,
                "accuracy": measured[of_record],
                "scored_on": "validation" if dataset == "sst2" else "test",
                "minutes": round((time.time() - started) / 60, 2),
                **{k: v for k, v in measured.items() if k not in ("strategy", "evaluated_on")},
                "commit": git_commit(),
                "command": command_line,
                "date": date.today().isoformat(),
                "cores": os.cpu_count(),
            }
            rows = [r for r in rows if (r["dataset"], r["recipe"], r["settings"], r["seed"]) != key] + [row]
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(rows, indent=2) + "\n")
            print(f"   accuracy {100 * row['accuracy']:.2f}, {row['epochs']} epochs, {row['minutes']} min", flush=True)


if __name__ == "__main__":
    main()
