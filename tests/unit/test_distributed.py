"""The same `lmadapt train` runs unchanged under `accelerate launch` with 2 CPU processes (DDP over gloo)."""

import json
import os
import subprocess
import sys

from lmadapt.runs import load_run
from tests.conftest import REPO, tiny_overrides, write_recipe


def test_two_process_run_trains_a_working_model_and_writes_one_run_folder(tmp_path, tiny_bert, sentiment_files):
    overrides = tiny_overrides(tiny_bert, sentiment_files, tmp_path / "runs", "ddp", **{"train.batch_size": 8})
    recipe = write_recipe(tmp_path / "ddp.yaml", overrides)
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        # accelerate's torchrun launcher; `--cpu` would start a single process. With no GPU the
        # Trainer runs DDP over gloo on the CPU.
        "--multi_gpu",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "lmadapt.cli",
        "train",
        str(recipe),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["ddp"], "one run folder, nothing half-written"
    run = load_run(tmp_path / "runs" / "ddp")
    assert run.metrics["training"]["processes"] == 2
    assert run.metrics["test"]["accuracy"] >= 0.9
    assert json.loads((run.path / "labels.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}
