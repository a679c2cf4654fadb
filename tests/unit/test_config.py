import pytest

from lmadapt.config import RunConfig, load_config, parse_config
from lmadapt.errors import LmadaptError
from lmadapt.strategies.head import HeadConfig
from lmadapt.strategies.scratch import ScratchConfig


def test_defaults_are_the_demo_setup():
    config = load_config()
    assert config.data.train == "builtin:rotten_tomatoes"
    assert config.model.backbone == "minilm"
    assert config.strategy_name == "full"


def test_overrides_are_typed_and_reach_strategy_options():
    config = load_config(
        None,
        ["train.epochs=5", "train.learning_rate=2e-4", "strategy.name=scratch", "strategy.hidden_size=64"],
    )
    assert config.train.epochs == 5.0 and isinstance(config.train.epochs, float)
    assert config.train.learning_rate == 2e-4
    assert isinstance(config.strategy, ScratchConfig) and config.strategy.hidden_size == 64


def test_unknown_key_names_the_nearest_valid_key():
    with pytest.raises(LmadaptError) as error:
        load_config(None, ["train.learnng_rate=0.1"])
    assert "unknown config key 'train.learnng_rate'" in str(error.value)
    assert "did you mean 'learning_rate'" in str(error.value)


def test_unknown_strategy_option_and_strategy_name():
    with pytest.raises(LmadaptError, match="(?s)unknown config key 'strategy.poolng'.*did you mean 'pooling'"):
        parse_config({"strategy": {"name": "head", "poolng": "mean"}})
    with pytest.raises(LmadaptError, match="(?s)unknown strategy 'ful'.*did you mean 'full'"):
        parse_config({"strategy": {"name": "ful"}})


def test_wrong_type_and_bad_choice_are_explained():
    with pytest.raises(LmadaptError, match="train.batch_size: expected int, got 'big'"):
        load_config(None, ["train.batch_size=big"])
    with pytest.raises(LmadaptError, match="(?s)'bf17' is not a valid value for train.precision.*did you mean 'bf16'"):
        load_config(None, ["train.precision=bf17"])
    with pytest.raises(LmadaptError, match="override 'train.epochs' has no '='"):
        load_config(None, ["train.epochs"])


def test_yaml_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ntrain:\n  epochs: [1, 2\n", encoding="utf-8")
    with pytest.raises(LmadaptError, match=r"bad.yaml, line \d+: not valid YAML"):
        load_config(path)
    path.write_text("model:\n  backbon: minilm\n", encoding="utf-8")
    with pytest.raises(LmadaptError) as error:
        load_config(path)
    assert str(path) in str(error.value) and "did you mean 'backbone'" in str(error.value)
    with pytest.raises(LmadaptError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_resolved_config_round_trips(tmp_path):
    config = load_config(None, ["strategy.name=head", "strategy.pooling=mean", "seed=7", "data.task=multi_label"])
    path = tmp_path / "resolved.yaml"
    path.write_text(config.to_yaml(), encoding="utf-8")
    again = load_config(path)
    assert again.to_dict() == config.to_dict()
    assert isinstance(again.strategy, HeadConfig) and again.seed == 7


def test_every_config_field_has_help():
    import dataclasses

    from lmadapt.config import DataConfig, ModelConfig, TrainConfig
    from lmadapt.strategies import STRATEGIES

    classes = [
        RunConfig,
        DataConfig,
        ModelConfig,
        TrainConfig,
        *(s.config_class for s in STRATEGIES.values()),
    ]
    for cls in classes:
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"


def test_recipes_in_configs_folder_parse():
    from pathlib import Path

    recipes = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))
    assert len(recipes) >= 5
    for recipe in recipes:
        load_config(recipe)


def test_run_names_ranges_and_raw_string_overrides():
    with pytest.raises(LmadaptError, match="(?s)run name '..' is not a plain folder name"):
        load_config(None, ["name=.."])
    with pytest.raises(LmadaptError, match="train.gradient_accumulation_steps must be positive, got 0"):
        load_config(None, ["train.gradient_accumulation_steps=0"])
    with pytest.raises(LmadaptError, match=r"train.warmup_ratio must lie in \[0, 1\), got 1.0"):
        load_config(None, ["train.warmup_ratio=1.0"])
    assert load_config(None, ["data.train=reviews-*.csv"]).data.train == "reviews-*.csv"
    with pytest.raises(
        LmadaptError, match="(?s)'max' is not a valid value for strategy.pooling.*Valid: cls, last, mean, native"
    ):
        load_config(None, ["strategy.name=head", "strategy.pooling=max"])


def test_non_utf8_recipe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(LmadaptError, match="(?s)r.yaml: the config is not UTF-8"):
        load_config(path)
