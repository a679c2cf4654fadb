"""Prompt-learning benchmark: zero-shot and few-shot strategies on SST-2 (and Banking77), 2 cores.

SST-2: zeroshot_lm (SmolLM2) and zeroshot_embed (MiniLM); setfit, incontext and prompt_finetune at
8/16/64 shots per class, drawn from the same seeded 20k-row training subset as the foundation
benchmark, several seeds each; scored on SST-2 validation (the k-shot runs select nothing on it:
train.select_best=false). Banking77: 10 shots per intent, scored on its test split.
Figures go to bench/results/prompt_learning.json: one row per (dataset, strategy, shots), the mean
over seeds with its standard deviation, and the time a run takes (training, and all of it).

    python bench/prompt_learning.py --data ../shared/data                      # everything
    python bench/prompt_learning.py --data ../shared/data --only sst2:setfit --shots 8 --seeds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from datetime import date
from pathlib import Path

from runner import ROOT, git_commit, write_sst2_subset

SENTIMENT_PROMPT = [
    'strategy.template="Review: {text}\\nSentiment: {label}"',  # YAML double quotes: \n is a newline
    "strategy.verbalizer={negative: [negative], positive: [positive]}",
]
STRATEGIES = {
    "zeroshot_lm": ["strategy.name=zeroshot_lm", "model.backbone=smollm2", *SENTIMENT_PROMPT],
    "zeroshot_embed": [
        "strategy.name=zeroshot_embed",
        "model.backbone=minilm",
        "strategy.descriptions={negative: ['a negative review', 'a bad, boring movie', terrible],"
        " positive: ['a positive review', 'a good, enjoyable movie', great]}",
    ],
    "setfit": ["strategy.name=setfit", "model.backbone=minilm", "train.epochs=1", "train.batch_size=16"],
    "incontext": ["strategy.name=incontext", "model.backbone=smollm2", *SENTIMENT_PROMPT],
    "prompt_finetune": [
        "strategy.name=prompt_finetune",
        "model.backbone=smollm2",
        *SENTIMENT_PROMPT,
        "train.epochs=10",
        "train.batch_size=8",
        "train.select_best=false",
        "train.early_stopping_patience=",
    ],
}
ZERO_SHOT = ("zeroshot_lm", "zeroshot_embed")


def data_settings(dataset: str, data: Path, workdir: Path) -> list[str]:
    if dataset == "sst2":
        return [
            f"data.train={workdir / 'sst2_train_subset.csv'}",
            f"data.validation={data / 'sst2' / 'validation.csv'}",
            f"data.test={data / 'sst2' / 'test.csv'}",
            "data.drop_leaks=false",
        ]
    return [
        f"data.train={data / 'banking77' / 'train.csv'}",
        f"data.test={data / 'banking77' / 'test.csv'}",
        "data.validation_size=0.1",
        "model.max_length=64",
    ]


def main() -> None:
    import lmadapt
    from lmadapt.compare.fewshot import fewshot_sweep

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "prompt_learning.json")
    parser.add_argument("--only", default="", help="comma-separated dataset:strategy pairs")
    parser.add_argument("--shots", default="8,16,64")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lmadapt-prompt-bench"))
    args = parser.parse_args()

    plan = [("sst2", name) for name in STRATEGIES] + [("banking77", "setfit")]
    if args.only:
        plan = [tuple(item.split(":")) for item in args.only.split(",")]
    args.workdir.mkdir(parents=True, exist_ok=True)
    write_sst2_subset(args.data, args.workdir / "sst2_train_subset.csv")
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    for dataset, strategy in plan:
        split = "validation" if dataset == "sst2" else "test"
        shots = [10] if dataset == "banking77" else [int(k) for k in args.shots.split(",")]
        settings = [f"name={dataset}-{strategy}", *data_settings(dataset, args.data, args.workdir)]
        base = lmadapt.load_config(None, settings + STRATEGIES[strategy])
        zero = strategy in ZERO_SHOT
        result = fewshot_sweep(
            base,
            args.workdir / dataset,
            shots=[] if zero else shots,
            seeds=args.seeds,
            strategies=[strategy],
            zero_shot=[strategy] if zero else [],
            full=False,
            split=split,
            progress=lambda name: print(f"== {name}", flush=True),
        )
        for summary in result.summary:
            members = [r for r in result.rows if r["shots"] == summary["shots"] and "error" not in r]
            row = {
                "dataset": dataset,
                "strategy": strategy,
                "shots": summary["shots"],
                "seeds": summary["seeds"],
                "accuracy": round(summary["accuracy"], 4) if summary["accuracy"] is not None else None,
                "accuracy_std": round(summary["accuracy_std"], 4),
                "macro_f1": round(summary["macro_f1"], 4) if summary["macro_f1"] is not None else None,
                "accuracies": [round(r["accuracy"], 4) for r in members],
                "train_s_mean": round(summary["train_s"], 1) if summary["train_s"] is not None else None,
                "run_s_mean": round(statistics.fmean(r["wall_s"] for r in members), 1) if members else None,
                "evaluated_on": split,
                "errors": summary["errors"],
                "commit": git_commit(),
                "command": "python " + " ".join(sys.argv),
                "date": date.today().isoformat(),
                "cores": os.cpu_count(),
            }
            key = (dataset, strategy, summary["shots"])
            rows = [r for r in rows if (r["dataset"], r["strategy"], r["shots"]) != key] + [row]
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(rows, indent=2) + "\n")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
