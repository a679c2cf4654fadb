"""`lmadapt tune`: an Optuna search over a strategy's space on a tiny model, resumable, with pruning per epoch."""

from __future__ import annotations

import dataclasses

import optuna
import pandas as pd
import pytest

import lmadapt
from lmadapt.errors import LmadaptError
from lmadapt.strategies import STRATEGIES
from lmadapt.strategies.space import Choice, FloatRange, IntRange
from lmadapt.tuning.report import importance_note, write_plots
from lmadapt.tuning.search import check_space, default_trial, search_space
from lmadapt.tuning.trial import EpochReports, run_trial
from tests.conftest import sentiment_rows, tiny_overrides, write_recipe, write_three_splits
from tests.unit.test_cli import run_cli

# A small space, so that a trial takes seconds on the tiny BERT; the strategies' own spaces are checked below.
SPACE = {
    "train.learning_rate": FloatRange(5e-4, 5e-3, log=True),
    "train.warmup_ratio": FloatRange(0.0, 0.2),
    "train.batch_size": Choice((16, 32)),
}
FILES = {"study.db", "best.yaml", "trials.csv", "optimization_history.png", "param_importances.png", "report.md"}


def overrides(tiny_bert, files, work, **extra):
    return tiny_overrides(tiny_bert, files, work / "runs", "tuned", **{"train.epochs": 2, **extra})


def search(config, output, trials, progress):
    """The search of these tests: 240 training rows, above the subset threshold: the trials train on 160 of them,
    the final run on all."""
    return lmadapt.tune(
        config,
        budget_minutes=10,
        trials=trials,
        output=output,
        subset_above=200,
        subset_rows=160,
        search_space=SPACE,
        progress=progress,
    )


def stored_trials(output):
    return optuna.load_study(study_name="lmadapt-tune", storage=f"sqlite:///{output / 'study.db'}").trials


@pytest.fixture(scope="module")
def searched(tiny_bert, tmp_path_factory):
    work = tmp_path_factory.mktemp("tune")
    files = write_three_splits(work, sentiment_rows(360))
    config = lmadapt.load_config(None, overrides(tiny_bert, files, work))
    lines = []
    output = work / "search"
    result = search(config, output, 2, lines.append)
    return config, output, result, lines


def test_a_search_writes_the_study_best_recipe_trials_report_and_final_run(searched):
    config, output, result, lines = searched
    assert FILES <= {p.name for p in output.iterdir()}
    assert not (output / ".trials").exists(), "trial run folders are scratch"
    study = optuna.load_study(study_name="lmadapt-tune", storage=f"sqlite:///{output / 'study.db'}")
    best = study.best_trial
    assert len(study.trials) == 2 and result.completed + result.pruned + result.failed == 2
    assert [t.user_attrs["train_rows"] for t in study.trials if t.value is not None] == [160] * result.completed
    assert (result.best_value, result.best_params) == (best.value, best.params)
    # best.yaml is the base config with the best trial's values: `lmadapt train best.yaml` trains them.
    recipe = lmadapt.load_config(output / "best.yaml")
    assert recipe.train.learning_rate == best.params["train.learning_rate"]
    assert recipe.train.warmup_ratio == best.params["train.warmup_ratio"]
    assert recipe.train.batch_size == best.params["train.batch_size"]
    assert (recipe.name, recipe.data.train, recipe.train.epochs) == (config.name, config.data.train, 2)
    # The final run: a normal run folder of the same values, on all training rows, scored on validation and test.
    run = lmadapt.load(output / config.name)
    assert run.path == result.run.path and run.config["train"] == {**recipe.to_dict()["train"]}
    assert run.metrics["data"]["rows"]["train"] == 240 and "test" in run.metrics
    trials = pd.read_csv(output / "trials.csv")
    assert list(trials["number"]) == [0, 1] and set(trials["state"]) <= {"COMPLETE", "PRUNED"}
    assert {"value", "params_train.learning_rate", "seconds"} <= set(trials.columns) and (trials["seconds"] > 0).all()
    report = (output / "report.md").read_text()
    assert f"Best: trial {best.number}, validation macro-F1 {100 * best.value:.2f}" in report
    assert f"| test | {100 * run.metrics['test']['accuracy']:.2f} |" in report
    assert lines[0] == "240 training rows: trials train on a stratified subset of 160"
    assert len(lines) == 4 and lines[1].startswith("trial 0: ") and "train.learning_rate=" in lines[1]
    assert lines[3].startswith("final run: trial ")


def test_the_first_trial_is_the_recipe_without_a_search(searched):
    config, output, _, _ = searched
    first = stored_trials(output)[0]
    # the config's rate and batch size; warm-up empty: full fine-tuning's default
    assert first.params == {"train.learning_rate": 2e-3, "train.warmup_ratio": 0.0, "train.batch_size": 16}


def test_the_first_trial_derives_what_the_config_leaves_empty_inside_the_space():
    lora = lmadapt.load_config(None, ["strategy.name=lora"])
    values = default_trial(lora, STRATEGIES["lora"].search_space, classes=77, rows=8999)
    assert values["train.learning_rate"] == 2e-3 and values["train.head_learning_rate"] == 1e-2
    assert values["train.epochs"] == 5 and values["train.batch_size"] == 32 and values["train.warmup_ratio"] == 0.1
    assert (values["strategy.r"], values["strategy.alpha"]) == (lora.strategy.r, lora.strategy.alpha)
    few_rows = default_trial(lora, STRATEGIES["lora"].search_space, classes=2, rows=300)
    assert few_rows["train.epochs"] == STRATEGIES["lora"].search_space["train.epochs"].high  # 10 derived, clamped
    assert "train.head_learning_rate" not in few_rows  # 1e-3 on two classes is none of the options: sampled


def test_the_same_command_again_resumes_the_search(searched):
    config, output, result, _ = searched
    before = stored_trials(output)
    again = search(config, output, 1, lambda _: None)
    after = stored_trials(output)
    assert len(after) == 3 and again.completed + again.pruned + again.failed == 3
    assert [(t.number, t.params, t.value) for t in after[:2]] == [(t.number, t.params, t.value) for t in before]
    assert after[2].params != after[0].params, "a resumed search draws new values"
    assert len(pd.read_csv(output / "trials.csv")) == 3


def test_another_config_in_the_folder_of_a_search_is_refused(searched):
    config, output, _, _ = searched
    saved = (output / "study.db").read_bytes()
    changed = dataclasses.replace(config, seed=7)
    with pytest.raises(LmadaptError) as caught:
        lmadapt.tune(changed, budget_minutes=1, output=output, search_space=SPACE)
    error = caught.value
    assert "holds a search of another config: seed (was 42, now 7)" in error.what
    assert error.where == str(output / "study.db") and "choose another --output" in error.fix
    assert (output / "study.db").read_bytes() == saved


def test_the_pruning_callback_reports_each_epoch_and_a_pruned_trial_leaves_no_folder(tiny_bert, tmp_path):
    files = write_three_splits(tmp_path, sentiment_rows(360))
    raw = lmadapt.load_config(None, overrides(tiny_bert, files, tmp_path, **{"train.epochs": 4})).to_dict()
    # Prunes whatever it sees from the second epoch on: macro-F1 never reaches 2.
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0, n_warmup_steps=2)
    )
    trial = study.ask()
    reported = []

    def report(value, epoch):
        reported.append(epoch)
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()

    folder = tmp_path / "scratch" / "trial-0000"
    with pytest.raises(optuna.TrialPruned):
        run_trial(raw, {"train.learning_rate": 1e-3}, folder, [EpochReports(report)])
    assert reported == [1, 2] and set(trial.storage.get_trial(trial._trial_id).intermediate_values) == {1, 2}
    assert not (tmp_path / "scratch").exists() or not any((tmp_path / "scratch").iterdir())


@pytest.mark.parametrize("name", [n for n, s in STRATEGIES.items() if s.trains])
def test_every_strategy_that_trains_declares_a_space_of_valid_keys(name):
    config = lmadapt.load_config(None, [f"strategy.name={name}"])
    space = search_space(config)
    assert "train.learning_rate" in space
    check_space(config.to_dict(), space)


def test_bad_inputs_say_what_where_and_how_to_fix(tiny_bert, tmp_path):
    files = write_three_splits(tmp_path, sentiment_rows(360))
    config = lmadapt.load_config(None, overrides(tiny_bert, files, tmp_path))
    cases = [
        (dict(budget_minutes=0), "--budget-minutes must be positive, got 0", "--budget-minutes", "--budget-minutes 30"),
        (dict(budget_minutes=1, trials=-1), "--trials must be positive", "--trials", "--trials 20"),
        (
            dict(budget_minutes=1, search_space={"strategy.rank": Choice((4, 8))}),
            "search space key 'strategy.rank' (value 4): unknown config key 'strategy.rank'",
            "search space: strategy.rank",
            "valid: freeze_embeddings",
        ),
        (
            dict(budget_minutes=1, search_space={"train.epochs": IntRange(5, 2)}),
            "has low 5 above high 2",
            "search space: train.epochs",
            "swap",
        ),
    ]
    for arguments, what, where, fix in cases:
        with pytest.raises(LmadaptError) as caught:
            lmadapt.tune(config, output=tmp_path / "search", **arguments)
        assert what in caught.value.what and caught.value.where == where and fix in caught.value.fix, caught.value
    zero_shot = lmadapt.load_config(None, ["strategy.name=zeroshot_embed"])
    with pytest.raises(LmadaptError) as caught:
        lmadapt.tune(zero_shot, budget_minutes=1, output=tmp_path / "search")
    assert "strategy 'zeroshot_embed' has nothing to tune: it does not train" in caught.value.what
    assert caught.value.where == "strategy.name" and "tune a strategy that trains" in caught.value.fix
    assert not (tmp_path / "search").exists(), "a refused search writes nothing"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "study.db").touch()
    with pytest.raises(LmadaptError) as caught:
        lmadapt.tune(config, budget_minutes=1, output=tmp_path / "other", search_space=SPACE)
    assert "holds no study of lmadapt tune" in caught.value.what and "another --output" in caught.value.fix


def test_importances_of_a_single_completed_trial_are_a_note_not_a_crash(tmp_path):
    study = optuna.create_study(direction="maximize")
    study.add_trial(
        optuna.trial.create_trial(
            params={"train.learning_rate": 1e-3},
            distributions={"train.learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)},
            value=0.8,
        )
    )
    assert write_plots(study, tmp_path) is None
    assert importance_note(study) == "parameter importances need at least 2 completed trials; this study has 1"
    assert (tmp_path / "optimization_history.png").is_file() and not (tmp_path / "param_importances.png").exists()


def test_cli_refuses_a_strategy_without_a_space_with_exit_code_2(monkeypatch, capsys, tmp_path):
    recipe = write_recipe(tmp_path / "zero.yaml", ["strategy.name=zeroshot_embed"])
    code, out, err = run_cli(monkeypatch, capsys, "tune", recipe, "--budget-minutes", "5")
    assert code == 2 and "Traceback" not in err + out
    assert err.startswith("error: strategy.name: strategy 'zeroshot_embed' has nothing to tune") and "fix: " in err


def test_cli_help_and_strategies_say_what_tune_does_and_searches(monkeypatch, capsys):
    code, out, _ = run_cli(monkeypatch, capsys, "tune", "--help")
    assert code == 0 and "Example:" in out and "--budget-minutes" in out and "--subset-rows" in out
    code, out, _ = run_cli(monkeypatch, capsys, "strategies")
    flat = " ".join(out.split())
    assert code == 0 and "`lmadapt tune` searches: train.learning_rate, train.head_learning_rate" in flat
    assert "`lmadapt tune` searches: nothing (it does not train)" in flat


@pytest.mark.parametrize(
    ("command", "option", "value"),
    [("tune", "--parallel", "2"), ("tune", "--ray-cpus", "1"), ("compare", "--ray-cpus", "1")],
)
def test_cluster_options_without_ray_are_refused_before_anything_is_written(
    monkeypatch, capsys, tmp_path, tiny_bert, command, option, value
):
    files = write_three_splits(tmp_path, sentiment_rows(24))
    recipe = write_recipe(tmp_path / "lora.yaml", tiny_overrides(tiny_bert, files, tmp_path / "runs", "lora"))
    budget = ["--budget-minutes", "5"] if command == "tune" else []
    code, out, err = run_cli(
        monkeypatch, capsys, command, recipe, *budget, "--output", str(tmp_path / "out"), option, value
    )
    assert code == 2 and "Traceback" not in err + out
    assert err.startswith(f"error: {option}: {option} applies only with --ray") and "fix: add --ray local" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()
