"""Compare benchmark: `lmadapt compare` with every registered strategy on SST-2 and Banking77.

Each strategy takes its own default backbone (MiniLM for the encoder strategies, SmolLM2 for the
causal-LM ones) and learning rate; the data protocol is the other benchmarks' (runner.data_overrides:
SST-2's seeded 20,000-row training subset, validation and test; Banking77's train with 10% held out
and its official test split), epochs as the recipes (SST-2 2, Banking77 5). Every strategy runs in
its own process with --max-minutes; the leaderboard rows go into bench/results/compare.json, the HTML
reports into bench/reports/compare_<dataset>.html.

Settings for single strategies (OWN_SETTINGS) are what a user of each would pass: on SST-2 the
prompt strategies read the sentiment prompt of the prompt-learning benchmark; the few-shot ones
(setfit, incontext, prompt_finetune) take k examples per class, as they are meant to (on all 20,000
texts SetFit's pairs alone would take hours here, and 20,000 demonstrations do not fit a prompt).

    python bench/compare.py --data ../shared/data
    python bench/compare.py --data ../shared/data --datasets sst2 --strategies head,lora,full
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from datetime import date
from pathlib import Path

from prompt_learning import SENTIMENT_PROMPT
from runner import ROOT, data_overrides, git_commit, write_sst2_subset

EPOCHS = {"sst2": 2, "banking77": 5}
SENTIMENT_DESCRIPTIONS = (
    "strategy.descriptions={negative: ['a negative review', 'a bad, boring movie', terrible],"
    " positive: ['a positive review', 'a good, enjoyable movie', great]}"
)
OWN_SETTINGS = {
    "sst2": [
        *(f"{name}:{item}" for name in ("zeroshot_lm", "incontext", "prompt_finetune") for item in SENTIMENT_PROMPT),
        f"zeroshot_embed:{SENTIMENT_DESCRIPTIONS}",
        "setfit:data.shots_per_class=64",
        "setfit:train.epochs=1",
        "setfit:train.batch_size=16",
        "incontext:data.shots_per_class=8",
        "prompt_finetune:data.shots_per_class=64",
        "prompt_finetune:train.epochs=10",
        "prompt_finetune:train.batch_size=8",
    ],
    "banking77": [
        "setfit:data.shots_per_class=8",
        "setfit:strategy.num_iterations=5",
        "setfit:train.epochs=1",
        "setfit:train.batch_size=16",
        "incontext:strategy.selection=similar",
        "incontext:strategy.demonstrations=8",
        "prompt_finetune:data.shots_per_class=8",
        "prompt_finetune:train.batch_size=8",
    ],
}


def main() -> None:
    import lmadapt
    from lmadapt.compare.leaderboard import Limits, split_settings
    from lmadapt.strategies import STRATEGIES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--datasets", default="sst2,banking77")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="default: every registered strategy")
    parser.add_argument("--max-minutes", type=float, default=60, help="time limit per strategy")
    parser.add_argument("--total-minutes", type=float, default=None, help="overall time limit per dataset")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lmadapt-compare-bench"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "compare.json")
    parser.add_argument("--reports", type=Path, default=ROOT / "bench" / "reports")
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    write_sst2_subset(args.data, args.workdir / "sst2_train_subset.csv")
    strategies = [name.strip() for name in args.strategies.split(",") if name.strip()]
    kept = json.loads(args.out.read_text()) if args.out.exists() else []
    common = {"commit": git_commit(), "command": "python " + " ".join(sys.argv), "date": date.today().isoformat()}
    for dataset in [name.strip() for name in args.datasets.split(",") if name.strip()]:
        settings = [f"name=compare-{dataset}", "seed=42", f"train.epochs={EPOCHS[dataset]}"]
        base = lmadapt.load_config(None, settings + data_overrides(dataset, args.data, args.workdir))
        output = args.workdir / dataset
        limits = Limits(minutes_per_strategy=args.max_minutes, total_minutes=args.total_minutes)
        own = {name: items for name, items in split_settings(OWN_SETTINGS[dataset])[1].items() if name in strategies}
        rows = lmadapt.compare_strategies(base, strategies, output, limits, settings=own)
        args.reports.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(output / "leaderboard.html", args.reports / f"compare_{dataset}.html")
        print((output / "leaderboard.md").read_text(), flush=True)
        earlier = {r["strategy"]: r for r in kept if r["dataset"] == dataset}
        kept = [r for r in kept if not (r["dataset"] == dataset and r["strategy"] in {row["strategy"] for row in rows})]
        for row in rows:
            # A reused row keeps the commit and command that measured it, where this file recorded them.
            made = earlier.get(row["strategy"], {}) if row.get("reused") else {}
            origin = {key: made.get(key, common[key]) for key in common}
            kept.append({"dataset": dataset, **row, "own_settings": own.get(row["strategy"], []), **origin})
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(kept, indent=2) + "\n")


if __name__ == "__main__":
    main()
