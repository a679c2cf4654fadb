"""Continual-learning benchmark: every method on two streams, MiniLM `full`, 2 cores.

banking77: the 77 intents in 5 seeded class-incremental groups (configs/continual/banking77_ci.yaml),
each experience scored on its intents' rows of the official test split. sentiment_domains: VADER's
movie, Amazon and tweet snippets in turn (configs/continual/sentiment_domains.yaml), each split 80/10/10.
Figures go to bench/results/continual.json: one row per (dataset, method) with average_accuracy,
forgetting, backward and forward transfer (points), the accuracy matrix (%), training seconds.

    python bench/continual.py --data ../shared/data                       # both streams, every method
    python bench/continual.py --data ../shared/data --only banking77 --methods naive,replay,joint
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date
from pathlib import Path

from runner import ROOT, git_commit

STREAMS = {
    "banking77": ROOT / "configs" / "continual" / "banking77_ci.yaml",
    "sentiment_domains": ROOT / "configs" / "continual" / "sentiment_domains.yaml",
}


def points(value):
    return None if value is None else round(100 * value, 2)


def main() -> None:
    import lmadapt
    from lmadapt.continual.learner import run_continual

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "continual.json")
    parser.add_argument("--only", default="", help="comma-separated streams: " + ", ".join(STREAMS))
    parser.add_argument("--methods", default="", help="comma-separated methods; default: each recipe's")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lmadapt-continual-bench"))
    args = parser.parse_args()

    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    for dataset in [s for s in args.only.split(",") if s] or list(STREAMS):
        settings = [f"output_dir={args.workdir}"]
        if dataset == "banking77":
            folder = args.data / "banking77"
            settings += [f"data.train={folder / 'train.csv'}", f"data.test={folder / 'test.csv'}"]
        if args.methods:
            settings.append(f"continual.methods={args.methods}")
        config = lmadapt.load_config(STREAMS[dataset], settings)
        for result in run_continual(config, progress=lambda text: print(f"== {text}", flush=True)):
            metrics = result.metrics
            train_rows = {step["experience"]: step["rows"] for step in result.steps}
            row = {
                "dataset": dataset,
                "strategy": result.method,
                "backbone": config.model.backbone,
                "experiences": result.experiences,
                "average_accuracy": points(metrics["average_accuracy"]),
                "forgetting": points(metrics["forgetting"]),
                "backward_transfer": points(metrics["backward_transfer"]),
                "forward_transfer": points(metrics["forward_transfer"]),
                "accuracy_matrix": [[points(v) for v in row] for row in result.matrix],
                "train_s": round(sum(step.get("runtime_s", 0.0) for step in result.steps), 1),
                "train_rows": train_rows,
                "memory_size": config.continual.memory_size if result.method == "replay" else None,
                "commit": git_commit(),
                "command": "python " + " ".join(sys.argv),
                "date": date.today().isoformat(),
                "cores": os.cpu_count(),
            }
            rows = [r for r in rows if (r["dataset"], r["strategy"]) != (dataset, result.method)] + [row]
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(rows, indent=2) + "\n")
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
