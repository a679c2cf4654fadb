"""Training settings derived from the data when the config leaves them empty."""

import yaml

import lmadapt
from lmadapt.strategies import get_strategy
from lmadapt.training.defaults import MAX_EPOCHS, class_scaled, derived_epochs, derived_settings
from tests.conftest import tiny_overrides


def config_with(**settings):
    return lmadapt.load_config(None, [f"{key}={'null' if value is None else value}" for key, value in settings.items()])


def test_epochs_hold_the_hand_recipes_step_budget_within_bounds():
    assert derived_epochs(20000, 32, 1) == 2  # SST-2's subset: the hand recipe's 2 epochs
    assert derived_epochs(8999, 32, 1) == 5  # Banking77: the hand recipe's 5
    assert derived_epochs(8999, 16, 2) == 5  # accumulation makes the same optimiser step
    assert derived_epochs(40, 32, 1) == MAX_EPOCHS
    assert derived_epochs(500000, 32, 1) == 1


def test_rates_run_from_two_classes_to_many_geometrically():
    assert class_scaled(1e-4, 2e-4, 2) == 1e-4
    assert class_scaled(1e-4, 2e-4, 1) == 1e-4  # a one-label multi-label task is not below two classes
    assert class_scaled(1e-4, 2e-4, 77) == 2e-4
    assert class_scaled(1e-4, 2e-4, 500) == 2e-4
    middle = class_scaled(1e-4, 2e-4, 12)
    assert 1e-4 < middle < 2e-4 and middle == class_scaled(1e-4, 2e-4, 12)


def test_only_empty_keys_are_derived_and_each_says_why():
    full, lora = get_strategy("full"), get_strategy("lora")
    derived = derived_settings(full, config_with(**{"train.epochs": None}), classes=77, rows=8999)
    assert {key: found["value"] for key, found in derived.items()} == {"epochs": 5, "learning_rate": 2e-4}
    assert all(found["rule"] for found in derived.values())
    set_by_user = config_with(**{"train.epochs": 3, "train.learning_rate": 5e-5, "train.head_learning_rate": 1e-3})
    assert derived_settings(lora, set_by_user, classes=77, rows=8999) == {}
    on_two = derived_settings(lora, config_with(), classes=2, rows=20000)
    assert on_two["learning_rate"]["value"] == on_two["head_learning_rate"]["value"] == lora.default_learning_rate
    on_many = derived_settings(lora, config_with(), classes=77, rows=8999)
    assert on_many["head_learning_rate"]["value"] == lora.head_learning_rate_many_classes


def test_strategies_without_a_rule_keep_their_defaults():
    head, setfit = get_strategy("head"), get_strategy("setfit")
    assert set(derived_settings(head, config_with(), classes=77, rows=8999)) == {"epochs"}
    own = derived_settings(setfit, config_with(), classes=77, rows=8999)
    assert own == {"epochs": {"value": setfit.default_epochs, "rule": "the setfit strategy's default"}}


def test_a_run_records_what_was_derived_and_saves_the_values(tiny_bert, sentiment_files, tmp_path):
    empty = {"train.epochs": None, "train.learning_rate": None}
    run = lmadapt.train(lmadapt.load_config(None, tiny_overrides(tiny_bert, sentiment_files, tmp_path, **empty)))
    derived = run.metrics["training"]["derived"]
    assert derived["epochs"]["value"] == MAX_EPOCHS  # 240 rows at batch 16: 15 steps an epoch
    assert derived["learning_rate"]["value"] == get_strategy("full").default_learning_rate  # two classes
    saved = yaml.safe_load((run.path / "config.yaml").read_text())
    assert saved["train"]["epochs"] == MAX_EPOCHS and saved["train"]["learning_rate"] == 1e-4
    assert run.metrics["training"]["learning_rate"] == 1e-4
