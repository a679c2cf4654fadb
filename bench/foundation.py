"""Foundation benchmark: lmadapt's `full`, `head` and `scratch` against a tutorial-style Trainer script.

Figures go to bench/results/foundation.json (a row per dataset, system and seed) and are
summarised in bench/RESULTS.md with this command beside them.

    python bench/foundation.py --data ../shared/data            # everything (about 45 min on 2 cores)
    python bench/foundation.py --data ../shared/data --only sst2:full,sst2:hf_trainer --seed 7
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from runner import ROOT, run_benchmark

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


def run_hf_trainer(data: Path, workdir: Path, seed: int) -> dict:
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


if __name__ == "__main__":
    run_benchmark(
        __doc__,
        LMADAPT_RUNS,
        ROOT / "bench" / "results" / "foundation.json",
        baselines={("sst2", "hf_trainer"): run_hf_trainer},
    )
