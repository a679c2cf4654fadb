"""PEFT benchmark: every parameter-efficient strategy beside `full`, on SST-2 and Banking77, MiniLM.

Same protocol as the foundation benchmark (bench/runner.py): SST-2 on the seeded 20k-row subset,
2 epochs, scored on validation; Banking77 on its official split, scored on test. Figures go to
bench/results/peft.json: accuracy, macro-F1, trainable %, artifact MB, training samples/s, peak RSS.

    python bench/peft_strategies.py --data ../shared/data                    # everything
    python bench/peft_strategies.py --data ../shared/data --only sst2:lora,banking77:lora
"""

from __future__ import annotations

from runner import ROOT, run_benchmark

# Learning rates are each strategy's default (see `lmadapt strategies`) unless set here.
SST2 = ["train.epochs=2"]
BANKING77 = ["train.epochs=5"]
STRATEGIES = {
    "full": ["strategy.name=full", "train.learning_rate=1e-4"],
    "lora": ["strategy.name=lora"],
    "adapter": ["strategy.name=adapter"],
    "prefix": ["strategy.name=prefix"],
    "prompt_tuning": ["strategy.name=prompt_tuning"],
    "ia3": ["strategy.name=ia3"],
    "bitfit": ["strategy.name=bitfit"],
}
RUNS = {("sst2", name): [*SST2, *options] for name, options in STRATEGIES.items()}
RUNS |= {("banking77", name): [*BANKING77, *options] for name, options in STRATEGIES.items()}
# 77 classes want twice the learning rate of 2 (measured for full fine-tuning, DESIGN.md section 8).
RUNS[("banking77", "full")] = [*BANKING77, "strategy.name=full", "train.learning_rate=2e-4"]
# LoRA's new 77-way head learns at the rate the `head` strategy uses there (1e-2), the adapter at 2e-3.
RUNS[("banking77", "lora")] = [
    *BANKING77,
    "strategy.name=lora",
    "train.learning_rate=2e-3",
    "train.head_learning_rate=1e-2",
]

if __name__ == "__main__":
    run_benchmark(__doc__, RUNS, ROOT / "bench" / "results" / "peft.json")
