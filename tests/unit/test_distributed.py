"""The same `lmadapt train` runs unchanged under `accelerate launch`: 2 CPU processes on one machine, and two
"machines" on loopback with the multi-node config (DDP over gloo); every accelerate config we ship loads."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from lmadapt.runs import load_run
from tests.conftest import REPO, tiny_overrides, write_recipe
from tests.unit.test_serving import free_port

ACCELERATE_CONFIGS = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))
# `accelerate launch` copies a config's nested keys onto its own options, these with a prefix added.
NESTED_PREFIXES = {"fsdp_config": "fsdp_", "fp8_config": "fp8_", "dynamo_config": "dynamo_"}


def launch(accelerate_options: list[str], recipe, log) -> subprocess.Popen:
    """`accelerate launch OPTIONS -m lmadapt.cli train RECIPE`, started in the recipe's folder, its output in `log`
    (a file, not a pipe: a launcher blocked on a full pipe would stall the other processes' collectives)."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *accelerate_options,
        "--dynamo_backend",
        "no",
        "-m",
        "lmadapt.cli",
        "train",
        str(recipe),
    ]
    # This checkout's sources first, as in the test process (an installed lmadapt may be another checkout's).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    with log.open("w") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=recipe.parent)


def finish(process: subprocess.Popen, log) -> None:
    assert process.wait(timeout=600) == 0, log.read_text()[-4000:]


def check_one_working_run(runs, name: str, test_csv) -> None:
    """Exactly one finished run folder, trained by 2 processes, whose saved model predicts the test split."""
    assert sorted(p.name for p in runs.iterdir()) == [name], "one run folder, nothing half-written"
    run = load_run(runs / name)
    assert run.metrics["training"]["processes"] == 2
    assert json.loads((run.path / "labels.json").read_text())["id2label"] == {"0": "negative", "1": "positive"}
    test = pd.read_csv(test_csv)
    predicted = [p["label"] for p in run.predict(list(test["text"]))]
    saved_accuracy = sum(p == t for p, t in zip(predicted, test["label"])) / len(test)
    assert saved_accuracy >= 0.9
    assert saved_accuracy == pytest.approx(run.metrics["test"]["accuracy"])  # the model saved is the one evaluated


def test_two_process_run_trains_a_working_model_and_writes_one_run_folder(tmp_path, tiny_bert, sentiment_files):
    overrides = tiny_overrides(tiny_bert, sentiment_files, tmp_path / "runs", "ddp", **{"train.batch_size": 8})
    recipe = write_recipe(tmp_path / "ddp.yaml", overrides)
    # `--multi_gpu` is accelerate's torchrun launcher; `--cpu` would start a single process. With no GPU the
    # Trainer runs DDP over gloo on the CPU.
    options = ["--num_processes", "2", "--num_machines", "1", "--multi_gpu", "--mixed_precision", "no"]
    log = tmp_path / "launch.log"
    finish(launch(options, recipe, log), log)
    check_one_working_run(tmp_path / "runs", "ddp", sentiment_files["test"])


def test_two_machines_on_loopback_train_one_run_with_the_multi_node_config(tmp_path, tiny_bert, sentiment_files):
    overrides = tiny_overrides(tiny_bert, sentiment_files, tmp_path / "runs", "nodes", **{"train.batch_size": 8})
    recipe = write_recipe(tmp_path / "nodes.yaml", overrides)
    config = REPO / "configs" / "accelerate" / "multi_node.yaml"
    # One process per "machine"; node 0's address and port are overridden on the command line as the file says.
    shared = ["--config_file", str(config), "--num_processes", "2", "--main_process_ip", "127.0.0.1"]
    shared += ["--main_process_port", str(free_port())]
    logs = [tmp_path / f"node{rank}.log" for rank in (0, 1)]
    nodes = [launch([*shared, "--machine_rank", str(rank)], recipe, logs[rank]) for rank in (0, 1)]
    try:
        for node, log in zip(nodes, logs):
            finish(node, log)
    finally:
        for node in nodes:
            node.kill()
    check_one_working_run(tmp_path / "runs", "nodes", sentiment_files["test"])


def unknown_launch_keys(config_file) -> list[str]:
    """Keys of an accelerate config file that accelerate would refuse or silently ignore: accelerate's loader
    refuses unknown top-level keys; nested ones (fsdp_config, deepspeed_config, ...) must be launch options."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    load_config_from_file(str(config_file))  # raises ValueError naming unknown top-level keys
    options = {action.dest for action in launch_command_parser()._actions}
    unknown = []
    for section, values in yaml.safe_load(config_file.read_text(encoding="utf-8")).items():
        for key in values if isinstance(values, dict) else ():
            prefix = NESTED_PREFIXES.get(section, "")
            option = key if key.startswith(prefix) else prefix + key
            if option not in options:
                unknown.append(f"{section}.{key}")
    return unknown


@pytest.mark.parametrize("config_file", ACCELERATE_CONFIGS, ids=lambda path: path.name)
def test_every_accelerate_config_is_accepted_by_accelerate(config_file):
    assert unknown_launch_keys(config_file) == []


def test_the_config_check_finds_a_misspelt_key(tmp_path):
    assert {path.name for path in ACCELERATE_CONFIGS} >= {"multi_node.yaml", "fsdp.yaml", "deepspeed_zero2.yaml"}
    fsdp = yaml.safe_load((REPO / "configs" / "accelerate" / "fsdp.yaml").read_text(encoding="utf-8"))
    fsdp["fsdp_config"]["fsdp_reshard_after_froward"] = True
    nested = tmp_path / "nested.yaml"
    nested.write_text(yaml.safe_dump(fsdp), encoding="utf-8")
    assert unknown_launch_keys(nested) == ["fsdp_config.fsdp_reshard_after_froward"]
    top = tmp_path / "top.yaml"
    top.write_text(yaml.safe_dump({**fsdp, "num_machine": 2}), encoding="utf-8")
    with pytest.raises(ValueError, match="num_machine"):
        unknown_launch_keys(top)
