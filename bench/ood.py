"""Out-of-scope benchmark: MiniLM `full` and `lora` on Banking77 with out-of-scope queries made from its own intents.

Protocol. One seeded permutation (numpy default_rng(42)) of the 77 sorted intent names: its first 10 intents are
never trained on and their official test rows are the out-of-scope test rows; the next 5 (the calibration intents)
are held out of training too and give the out-of-scope validation rows, so no test intent touches the threshold.
The 5 calibration intents' test rows and the 10 test intents' training rows are not used. The other 62 intents are
in scope: a seeded stratified 10% of their training rows (train_test_split, random_state=--seed) is validation,
the other 90% train; test is their official test rows (official order) beside the out-of-scope ones, labelled oos.

Two schemes:
- threshold: validation also holds every training row of the calibration intents, labelled oos
  (ood.label=oos, ood.train_as_class=false): only the calibrated score threshold abstains.
- oos_class: the calibration intents' training rows, labelled oos, are split 90/10 (seeded) between train and
  validation and oos is trained as a class (ood.train_as_class=true): predicting it abstains too.

Each system is its recipe (configs/intent/minilm_full.yaml, minilm_lora.yaml) with those data files, ood.method=auto
and the scheme's ood keys, trained in its own subprocess. Every calibrated method (msp, energy, mahalanobis, knn)
gives a row of bench/results/ood.json with its test figures at its own validation threshold (`applied`: the one
auto chose). A cost row per system and method: texts/s of run.predictor.predict on the test texts with abstention
by that method against plain prediction (no detector), torch, batch 64, 3 interleaved rounds, median. A rerun of a
system replaces that system's rows for its seed and keeps the others.

    HF_HUB_OFFLINE=1 python bench/ood.py --data ../shared/data                       # the four systems
    HF_HUB_OFFLINE=1 python bench/ood.py --data ../shared/data --only full:threshold,lora:threshold --seed 7
    HF_HUB_OFFLINE=1 python bench/ood.py --quick --only full:threshold   # a check: bench/results/ood_quick.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from runner import ROOT, chosen_plan, git_commit

DATASET = "banking77"
OOS = "oos"
INTENT_SEED = 42  # the out-of-scope intents are part of the benchmark's definition: fixed whatever --seed
TEST_OOS_INTENTS = 10
CALIBRATION_INTENTS = 5
VALIDATION_SHARE = 0.1
RECIPES = {
    "full": ROOT / "configs" / "intent" / "minilm_full.yaml",
    "lora": ROOT / "configs" / "intent" / "minilm_lora.yaml",
}
SCHEMES = {
    "threshold": ["ood.label=oos", "ood.train_as_class=false"],
    "oos_class": ["ood.label=oos", "ood.train_as_class=true"],
}
PLAN = [("full", "threshold"), ("lora", "threshold"), ("full", "oos_class"), ("lora", "oos_class")]
FIGURES = (
    "in_scope_accuracy",
    "accuracy_without_abstention",
    "in_scope_abstained",
    "oos_recall",
    "oos_precision",
    "auroc",
    "fpr95",
    "aupr",
    "threshold",
    "in_scope_rows",
    "oos_rows",
)
COST_ROUNDS = 3
COST_BATCH_SIZE = 64
# --quick checks the script end to end in minutes; its rows go to their own file, never among the real ones.
QUICK_OVERRIDES = ["data.max_train_rows=600", "train.epochs=1"]
QUICK_TEST_ROWS = 300


def split_intents(intents: list[str]) -> tuple[list[str], list[str]]:
    """The out-of-scope test intents and the calibration intents: disjoint slices of one seeded permutation."""
    import numpy as np

    permuted = [str(name) for name in np.random.default_rng(INTENT_SEED).permutation(sorted(intents))]
    return permuted[:TEST_OOS_INTENTS], permuted[TEST_OOS_INTENTS : TEST_OOS_INTENTS + CALIBRATION_INTENTS]


def write_scheme_data(data: Path, scheme: str, folder: Path, seed: int, quick: bool) -> dict[str, Path]:
    """train.csv, validation.csv and test.csv (text,label; out-of-scope rows labelled oos) of a scheme."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    official_train = pd.read_csv(data / DATASET / "train.csv")
    official_test = pd.read_csv(data / DATASET / "test.csv")
    test_oos, calibration = split_intents(official_train["label"].unique().tolist())
    in_scope = official_train[~official_train["label"].isin(test_oos + calibration)]
    train, validation = train_test_split(
        in_scope, test_size=VALIDATION_SHARE, stratify=in_scope["label"], random_state=seed
    )
    calibration_rows = official_train[official_train["label"].isin(calibration)].assign(label=OOS)
    if scheme == "threshold":
        validation = pd.concat([validation, calibration_rows])
    else:
        oos_train, oos_validation = train_test_split(calibration_rows, test_size=VALIDATION_SHARE, random_state=seed)
        train, validation = pd.concat([train, oos_train]), pd.concat([validation, oos_validation])
    test = official_test[~official_test["label"].isin(calibration)].copy()
    test.loc[test["label"].isin(test_oos), "label"] = OOS
    if quick:
        test = test.head(QUICK_TEST_ROWS)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"train": folder / "train.csv", "validation": folder / "validation.csv", "test": folder / "test.csv"}
    for name, frame in (("train", train), ("validation", validation), ("test", test)):
        frame[["text", "label"]].to_csv(files[name], index=False)
    return files


def rounded(value, digits: int = 4):
    return round(value, digits) if isinstance(value, float) else value


def abstention_cost(run, texts: list[str]) -> list[dict]:
    """Texts/s of predict with abstention by each calibrated method against plain prediction, same process and
    backend (torch), rounds interleaved so that a slow spell of the machine hits every variant alike."""
    predictor = run.predictor
    predictor.batch_size = COST_BATCH_SIZE
    detector = predictor.ood
    methods = list(detector.thresholds)

    def texts_per_s(method: str | None, batch: list[str]) -> float:
        predictor.ood = None if method is None else detector
        if method is not None:
            detector.method = method  # the detector holds every method's threshold
        started = time.perf_counter()
        predictor.predict(batch)
        return len(batch) / (time.perf_counter() - started)

    # Untimed warm-up: the first forward passes allocate, and knn builds its neighbour index on first use.
    for method in [None, *methods]:
        texts_per_s(method, texts[:COST_BATCH_SIZE])
    speeds: dict[str | None, list[float]] = {method: [] for method in [*methods, None]}
    for _ in range(COST_ROUNDS):
        for method in speeds:
            speeds[method].append(texts_per_s(method, texts))
    plain = statistics.median(speeds[None])
    return [
        {
            "kind": "abstention_cost",
            "method": method,
            "texts_per_s": round(statistics.median(speeds[method]), 1),
            "plain_texts_per_s": round(plain, 1),
            "ratio": round(statistics.median(speeds[method]) / plain, 3),
            "texts": len(texts),
            "rounds": COST_ROUNDS,
            "batch_size": COST_BATCH_SIZE,
            "backend": "torch",
        }
        for method in methods
    ]


def run_system(strategy: str, scheme: str, data: Path, workdir: Path, seed: int, quick: bool) -> list[dict]:
    """Train one system in this (child) process; its figure rows and its cost rows."""
    import pandas as pd

    import lmadapt

    files = write_scheme_data(data, scheme, workdir / f"data-{scheme}", seed, quick)
    settings = ["ood.method=auto", *SCHEMES[scheme], *(QUICK_OVERRIDES if quick else [])]
    overrides = [
        f"data.train={files['train']}",
        f"data.validation={files['validation']}",
        f"data.test={files['test']}",
        f"name={DATASET}-{strategy}-{scheme}",
        f"output_dir={workdir / 'runs'}",
        f"seed={seed}",
        *settings,
    ]
    config = lmadapt.load_config(RECIPES[strategy], overrides)
    started = time.perf_counter()
    run = lmadapt.train(config, overwrite=True)
    train_wall_s = round(time.perf_counter() - started, 1)
    metrics = run.metrics
    test = metrics["ood"]["test"]
    validation = metrics["ood"]["validation"]
    rows = [
        {
            "method": method,
            **{name: rounded(figures.get(name)) for name in FIGURES},
            "applied": method == test["method"],
            "validation_auroc": rounded(validation[method].get("auroc")),  # what auto chose by
            "train_wall_s": train_wall_s,
            "train_rows": metrics["data"]["rows"]["train"],
            "overrides": settings,  # beside the recipe, the data files and the seed
        }
        for method, figures in test["methods"].items()
    ]
    texts = pd.read_csv(files["test"])["text"].tolist()
    return rows + abstention_cost(run, texts)


def print_tables(rows: list[dict]) -> None:
    def cell(value) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    detection = [r for r in rows if "kind" not in r]
    print(
        "\n| strategy | scheme | seed | method | applied | in-scope acc | acc no abstain | oos recall | oos prec "
        "| AUROC | FPR95 | AUPR | threshold | train s |"
    )
    print("|" + "---|" * 14)
    for r in detection:
        if "error" in r:
            print(f"| {r['strategy']} | {r['scheme']} | {r['seed']} | error: {r['error']} |")
            continue
        keys = ("in_scope_accuracy", "accuracy_without_abstention", "oos_recall", "oos_precision", "auroc")
        keys += ("fpr95", "aupr", "threshold", "train_wall_s")
        figures = " | ".join(cell(r.get(k)) for k in keys)
        print(f"| {r['strategy']} | {r['scheme']} | {r['seed']} | {r['method']} | {r['applied']} | {figures} |")
    print("\n| strategy | scheme | seed | method | texts/s | plain texts/s | ratio |")
    print("|" + "---|" * 7)
    for r in rows:
        if r.get("kind") == "abstention_cost":
            print(
                f"| {r['strategy']} | {r['scheme']} | {r['seed']} | {r['method']} | {r['texts_per_s']} "
                f"| {r['plain_texts_per_s']} | {r['ratio']} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/ood.json (ood_quick.json)")
    parser.add_argument("--only", default="", help="comma-separated strategy:scheme pairs")
    parser.add_argument("--seed", type=int, default=42, help="training seed and validation split (intents stay fixed)")
    parser.add_argument("--quick", action="store_true", help="600 training rows, 1 epoch, 300 test rows")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        strategy, scheme = args.child.split(":")
        rows = run_system(strategy, scheme, args.data, args.workdir, args.seed, args.quick)
        print("ROWS " + json.dumps(rows))
        return

    out = args.out or ROOT / "bench" / "results" / ("ood_quick.json" if args.quick else "ood.json")
    plan = chosen_plan(parser, PLAN, args.only, "strategy:scheme")
    rows = json.loads(out.read_text()) if out.exists() else []
    command_line = "python " + " ".join(sys.argv)
    with tempfile.TemporaryDirectory() as workdir:
        for strategy, scheme in plan:
            print(f"== {DATASET} / {strategy} / {scheme}", flush=True)
            # One child per system: peak memory is its own, and nothing of one run lingers into the next.
            child = [sys.executable, sys.argv[0], "--data", str(args.data), "--child", f"{strategy}:{scheme}"]
            child += ["--workdir", workdir, "--seed", str(args.seed), *(["--quick"] if args.quick else [])]
            done = subprocess.run(child, capture_output=True, text=True)
            found = [line for line in done.stdout.splitlines() if line.startswith("ROWS ")]
            if done.returncode != 0 or not found:
                print(done.stderr[-3000:], flush=True)
                last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
                measured = [{"error": last}]
            else:
                measured = json.loads(found[-1][5:])
            stamp = {
                "seed": args.seed,
                "commit": git_commit(),
                "command": command_line,
                "date": date.today().isoformat(),
                "cores": os.cpu_count(),
            }
            new = [{"dataset": DATASET, "strategy": strategy, "scheme": scheme, **row, **stamp} for row in measured]
            # A rerun replaces every row of its system and seed (each method's, the cost rows, an earlier error).
            same = (DATASET, strategy, scheme, args.seed)
            rows = [r for r in rows if (r["dataset"], r["strategy"], r["scheme"], r["seed"]) != same] + new
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(rows, indent=2) + "\n")
            for row in new:
                print(json.dumps(row), flush=True)
    print_tables(rows)


if __name__ == "__main__":
    main()
