"""Foundation benchmark: lmadapt's `full`, `head` and `scratch` against a tutorial-style Trainer script.

Each system trains in its own subprocess, so peak RSS is per system. Figures go to
bench/results/foundation.json (a row per dataset and system) and are summarised in bench/RESULTS.md
by hand, with this command beside them.

    python bench/foundation.py --data ../shared/data            # everything (about 45 min on 2 cores)
    python bench/foundation.py --data ../shared/data --only sst2:full,sst2:hf_trainer --seed 7
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SST2_ROWS = 20000  # seeded subset of the 67k training rows: the tutorial baseline must fit ~20 minutes
SST2_EPOCHS = 2
SST2_LR = 1e-4

# (dataset, system) -> lmadapt overrides; each runs with `lmadapt train` semantics through the Python API.
LMADAPT_RUNS = {
    ("sst2", "full"): [f"train.epochs={SST2_EPOCHS}", f"train.learning_rate={SST2_LR}", "strategy.name=full"],
    ("sst2", "full_fp32"): [
        f"train.epochs={SST2_EPOCHS}",
        f"train.learning_rate={SST2_LR}",
        "strategy.name=full",
        "train.precision=fp32",
    ],
    ("sst2", "head"): ["train.epochs=4", "strategy.name=head"],
    ("sst2", "scratch"): ["train.epochs=6", "strategy.name=scratch", "train.early_stopping_patience=2"],
    ("banking77", "full"): ["train.epochs=5", "train.learning_rate=2e-4", "strategy.name=full"],
    ("banking77", "head"): ["train.epochs=10", "train.learning_rate=1e-2", "strategy.name=head"],
    ("banking77", "scratch"): ["train.epochs=15", "strategy.name=scratch", "train.early_stopping_patience=3"],
}


def write_sst2_subset(data: Path, target: Path) -> Path:
    """The seeded SST-2 training subset every system reads: the very same rows for lmadapt and the baseline."""
    import pandas as pd

    frame = pd.read_csv(data / "sst2" / "train.csv").drop_duplicates("text")
    frame.sample(n=SST2_ROWS, random_state=42).to_csv(target, index=False)
    return target


def data_overrides(dataset: str, data: Path, workdir: Path) -> list[str]:
    if dataset == "sst2":
        folder = data / "sst2"
        return [
            f"data.train={workdir / 'sst2_train_subset.csv'}",
            f"data.validation={folder / 'validation.csv'}",
            f"data.test={folder / 'test.csv'}",
            # SST-2's phrase-level training data repeats validation sentences; keep them, as every SST-2 paper does.
            "data.drop_leaks=false",
        ]
    folder = data / "banking77"
    return [f"data.train={folder / 'train.csv'}", f"data.test={folder / 'test.csv'}", "data.validation_size=0.1"]


def git_commit() -> str:
    found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return found.stdout.strip() or "unknown"


def run_lmadapt(dataset: str, system: str, data: Path, workdir: Path, seed: int) -> dict:
    """One lmadapt run in this (child) process; returns its benchmark row."""
    import lmadapt

    overrides = [
        f"name={dataset}-{system}",
        f"output_dir={workdir}",
        f"seed={seed}",
        *data_overrides(dataset, data, workdir),
        *LMADAPT_RUNS[(dataset, system)],
    ]
    run = lmadapt.train(lmadapt.load_config(None, overrides), overwrite=True)
    m = run.metrics
    model_bytes = sum(f.stat().st_size for f in (run.path / "model").rglob("*") if f.is_file())
    return {
        "accuracy": round(m["validation"]["accuracy"], 4),
        "macro_f1": round(m["validation"]["macro_f1"], 4),
        "test_accuracy": round(m["test"]["accuracy"], 4),
        "test_macro_f1": round(m["test"]["macro_f1"], 4),
        "samples_per_s": m["training"]["samples_per_s"],
        "train_runtime_s": m["training"]["runtime_s"],
        "epochs": m["training"]["epochs"],
        "precision": m["training"]["precision"],
        "peak_rss_mb": m["peak_rss_mb"],
        "trainable_pct": m["parameters"]["trainable_pct"],
        "trainable_params": m["parameters"]["trainable"],
        "artifact_mb": round(model_bytes / 2**20, 2),
        "train_rows": m["data"]["rows"]["train"],
        "evaluated_on": "validation"
        if dataset == "sst2"
        else "validation (10% of train); test_* on the official test split",
        "overrides": overrides[3:],
    }


def run_baseline(dataset: str, data: Path, workdir: Path, seed: int) -> dict:
    from lmadapt.models import resolve_backbone

    command = [
        sys.executable,
        str(ROOT / "bench" / "hf_trainer_baseline.py"),
        "--model",
        str(resolve_backbone("minilm")),
        "--train",
        str(workdir / "sst2_train_subset.csv"),
        "--validation",
        str(data / "sst2" / "validation.csv"),
        "--test",
        str(data / "sst2" / "test.csv"),
        "--seed",
        str(seed),
        "--epochs",
        str(SST2_EPOCHS),
        "--batch-size",
        "32",
        "--learning-rate",
        str(SST2_LR),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["evaluated_on"] = "validation"
    row["note"] = (
        "tutorial Trainer script: DataCollatorWithPadding, random batches, fp32; same subset, epochs, batch 32, lr"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "foundation.json")
    parser.add_argument("--only", default="", help="comma-separated dataset:system pairs")
    parser.add_argument(
        "--seed", type=int, default=42, help="training seed of every system (the data subset stays fixed)"
    )
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        dataset, system = args.child.split(":")
        row = (
            run_baseline(dataset, args.data, args.workdir, args.seed)
            if system == "hf_trainer"
            else run_lmadapt(dataset, system, args.data, args.workdir, args.seed)
        )
        print("ROW " + json.dumps(row))
        return

    plan = [("sst2", "hf_trainer"), *LMADAPT_RUNS]
    if args.only:
        wanted = {tuple(item.split(":")) for item in args.only.split(",")}
        plan = [p for p in plan if p in wanted]
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    command_line = "python bench/foundation.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory() as workdir:
        write_sst2_subset(args.data, Path(workdir) / "sst2_train_subset.csv")
        for dataset, system in plan:
            started = time.time()
            print(f"== {dataset} / {system}", flush=True)
            child = [
                sys.executable,
                __file__,
                "--data",
                str(args.data),
                "--child",
                f"{dataset}:{system}",
                "--workdir",
                workdir,
                "--seed",
                str(args.seed),
            ]
            done = subprocess.run(child, capture_output=True, text=True)
            found = [line for line in done.stdout.splitlines() if line.startswith("ROW ")]
            if done.returncode != 0 or not found:
                print(done.stderr[-3000:], flush=True)
                row = {
                    "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
                }
            else:
                row = json.loads(found[-1][4:])
            row = {
                "dataset": dataset,
                "strategy": system,
                "seed": args.seed,
                **row,
                "backbone": None if system == "scratch" else "minilm",
                "wall_s": round(time.time() - started, 1),
                "commit": git_commit(),
                "command": command_line,
                "date": date.today().isoformat(),
                "cores": __import__("os").cpu_count(),
            }
            same = (dataset, system, args.seed)
            rows = [r for r in rows if (r["dataset"], r["strategy"], r.get("seed", 42)) != same] + [row]
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(rows, indent=2) + "\n")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
