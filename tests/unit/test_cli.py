"""The command line: thin over the API, clear one-line errors with exit code 2, --help everywhere."""

import re
import sys

import pytest
import yaml

from lmadapt import cli
from tests.conftest import tiny_overrides, write_recipe


def run_cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["lmadapt", *map(str, args)])
    code = 0
    try:
        cli.main()
    except SystemExit as exit:
        code = exit.code or 0
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["train"],
        ["evaluate"],
        ["predict"],
        ["merge"],
        ["export"],
        ["serve"],
        ["fewshot"],
        ["compare"],
        ["continual"],
        ["update"],
        ["models"],
        ["strategies"],
        ["keys"],
        ["demo"],
        ["data"],
        ["data", "inspect"],
    ],
)
def test_every_command_has_help_with_an_example(monkeypatch, capsys, command):
    code, out, _ = run_cli(monkeypatch, capsys, *command, "--help")
    assert code == 0 and "Usage:" in out
    if command:
        assert "Example:" in out


def test_user_errors_exit_2_without_traceback(monkeypatch, capsys, tmp_path):
    (tmp_path / "bad.csv").write_text("text,label\na,b,c\n")
    cases = [
        (["train", tmp_path / "missing.yaml"], "config file not found"),
        (["train", tmp_path / "missing.yaml", "--set", "x"], "config file not found"),
        (["predict", tmp_path / "no-run", "text"], "run folder not found"),
        (["merge", tmp_path / "no-run", "--output", tmp_path / "merged"], "run folder not found"),
        (["data", "inspect", tmp_path / "bad.csv", "--backbone", "none"], "bad.csv, line 2: malformed CSV"),
        (
            ["data", "inspect", tmp_path / "bad.csv", "--backbone", "none", "--task", "multi"],
            "did you mean 'multi_label'",
        ),
        (["fewshot", tmp_path / "missing.yaml", "--shots", "8,x"], "--shots must be whole numbers"),
        (["fewshot", tmp_path / "missing.yaml", "--shots", "0"], "--shots needs at least one positive number"),
        (["fewshot", tmp_path / "missing.yaml", "--split", "dev"], "--split must be test or validation"),
        (["continual", tmp_path / "missing.yaml"], "config file not found"),
        (["update", tmp_path / "no-run", "--data", tmp_path / "bad.csv"], "run folder not found"),
        (["fewshot", tmp_path / "missing.yaml"], "config file not found"),
        (["export", tmp_path / "no-run"], "run folder not found"),
        (["export", tmp_path / "no-run", "--format", "tflite"], "unknown export format 'tflite'"),
        (["serve", tmp_path / "no-run"], "run folder not found"),
        (["compare"], "nothing to compare on"),
        (["compare", "--data", tmp_path / "bad.csv", "--strategies", "lorra"], "did you mean 'lora'"),
        (["compare", "--data", tmp_path / "bad.csv", "--sort", "speed"], "cannot sort by 'speed'"),
        (
            ["compare", "--data", tmp_path / "bad.csv", "--set", "setfit:data.shots_per_class=8"],
            "settings given for 'setfit', which is not compared",
        ),
        (
            ["compare", "--data", tmp_path / "bad.csv", "--set", "lora:train.epoch=1"],
            "unknown config key 'train.epoch'",
        ),
        (["predict", tmp_path / "no-run", "text", "--backend", "onnx"], "run folder not found"),
    ]
    for args, expected in cases:
        code, out, err = run_cli(monkeypatch, capsys, *args)
        assert code == 2, (args, out, err)
        assert expected in err and "Traceback" not in err, err
        assert err.startswith("error: ")


def test_data_inspect_names_a_missing_label_column(monkeypatch, capsys, tmp_path):
    (tmp_path / "d.csv").write_text("text,sentiment\ngood film,positive\nbad film,negative\n")
    code, out, err = run_cli(monkeypatch, capsys, "data", "inspect", tmp_path / "d.csv", "--backbone", "none")
    assert code == 2 and "Traceback" not in err and not out
    assert "column 'label' not found; the data has columns: text, sentiment" in err
    assert "fix: name the file's own columns with --label-column NAME" in err
    code, out, err = run_cli(
        monkeypatch, capsys, "data", "inspect", tmp_path / "d.csv", "--backbone", "none", "--label-column", "sentiment"
    )
    assert code == 0 and "labels (2 classes)" in out, err


def test_bad_config_key_in_file(monkeypatch, capsys, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"train": {"epoch": 3}}))
    code, _, err = run_cli(monkeypatch, capsys, "train", recipe)
    assert code == 2 and "unknown config key 'train.epoch'" in err and "did you mean 'epochs'" in err


def test_train_predict_evaluate_through_the_cli(monkeypatch, capsys, tmp_path, tiny_bert, sentiment_files):
    recipe = write_recipe(
        tmp_path / "recipe.yaml", tiny_overrides(tiny_bert, sentiment_files, tmp_path / "runs", "cli")
    )
    code, out, err = run_cli(monkeypatch, capsys, "train", recipe, "--set", "train.epochs=10")
    assert code == 0, err
    assert "cli (full)" in out and (tmp_path / "runs" / "cli" / "manifest.json").is_file()

    code, out, err = run_cli(
        monkeypatch, capsys, "predict", tmp_path / "runs" / "cli", "a superb and brilliant film", "dull and tedious"
    )
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("positive") and lines[1].startswith("negative")
    # never exported: auto measured PyTorch (bf16 too where the CPU multiplies it) and says what it took
    assert re.search(r"^2 texts on torch(-bf16)? in [\d.]+ s \(\d+ texts/s\)$", err, re.MULTILINE), err

    code, out, _ = run_cli(
        monkeypatch, capsys, "predict", tmp_path / "runs" / "cli", "--input", sentiment_files["test"]
    )
    assert code == 2

    code, out, _ = run_cli(
        monkeypatch,
        capsys,
        "evaluate",
        tmp_path / "runs" / "cli",
        "--data",
        sentiment_files["test"],
        "--output",
        tmp_path / "ev",
    )
    assert code == 0 and "accuracy" in out and (tmp_path / "ev" / "confusion.png").is_file()


def test_models_lists_packaged_aliases(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "models")
    assert code == 0 and "minilm" in out and "smollm2" in out and "22.7M" in out
    assert "e5-multilingual" in out and "Chinese" in out  # with the languages each reads


def test_strategies_lists_every_strategy_with_its_options_verbatim(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "strategies")
    flat = " ".join(out.split())
    assert code == 0
    for name in ("scratch", "head", "full", "lora", "adapter", "prefix", "prompt_tuning", "ia3", "bitfit"):
        assert f"{name}:" in flat
    assert "e.g. [query, value]" in flat  # option help is printed as written, not read as markup


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train"], "Missing argument 'config'"),
        (["trian"], "No such command 'trian'"),
        (["serve", "runs/x", "--port", "abc"], "Invalid value for '--port'"),
        (["serve", "runs/x", "--port", "99999"], "Invalid value for '--port'"),
        (["predict", "runs/x", "--batch-size", "0"], "Invalid value for '--batch-size'"),
        (["evaluate", "runs/x", "--no-such-option"], "No such option: --no-such-option"),
    ],
)
def test_usage_errors_print_the_usage_line_and_exit_2(monkeypatch, capsys, args, expected):
    code, out, err = run_cli(monkeypatch, capsys, *args)
    assert code == 2, (out, err)
    assert expected in err and "Usage: lmadapt" in err and "Traceback" not in err + out


def test_ctrl_c_during_training_exits_130_and_says_how_to_resume(tmp_path, tiny_bert, sentiment_files):
    import signal
    import subprocess
    import time

    recipe = write_recipe(
        tmp_path / "recipe.yaml", tiny_overrides(tiny_bert, sentiment_files, tmp_path / "runs", "stopped")
    )
    command = [sys.executable, "-m", "lmadapt.cli", "train", str(recipe), "--set", "train.epochs=10000"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:  # a failure here must not leave 10,000 epochs training behind the later tests
        checkpoints = tmp_path / "runs" / ".stopped.partial" / "checkpoints"
        deadline = time.monotonic() + 120
        while not any(checkpoints.glob("checkpoint-*")) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130, err
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "stopped").exists()  # no folder that looks finished


def test_keys_lists_config_keys_by_section_and_refuses_an_unknown_one(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "keys", "data")
    lines = out.splitlines()
    assert code == 0 and lines[1] == "data" and "  data.validation (str or empty; default: empty)" in lines
    assert "  data.label_delimiter (str; default: '|')" in lines and "train.epochs" not in out
    assert max(map(len, lines)) <= 80 and all(line == line.rstrip() for line in lines)
    code, out, _ = run_cli(monkeypatch, capsys, "keys")
    assert code == 0 and "\ntop-level\n  name (str; default: run)" in out and "strategy.name" in out
    code, _, err = run_cli(monkeypatch, capsys, "keys", "trian")
    assert code == 2 and "no config key or section 'trian'" in err and "did you mean 'train'" in err
    _, out, _ = run_cli(monkeypatch, capsys, "train", "--help")
    assert "lmadapt keys" in out


def test_ctrl_c_elsewhere_than_training_does_not_speak_of_resuming(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["lmadapt", "recommend", "train", "recipe.yaml"])
    with pytest.raises(SystemExit) as stopped:
        cli._interrupted()
    err = capsys.readouterr().err
    assert stopped.value.code == 130 and "interrupted" in err and "--resume" not in err
