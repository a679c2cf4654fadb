import pytest

from lmadapt.config import RunConfig
from lmadapt.errors import LmadaptError
from lmadapt.recipe import load_config, parse_config
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
    with pytest.raises(LmadaptError, match="--set train.batch_size=big: expected int, got 'big'"):
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
    """Run recipes as run configs; configs/support/ holds support bots' recipes, and the intent recipes they name;
    configs/monitor/ monitors' configs beside the run recipes of the runs they name; configs/recommend/ recommenders'
    recipes."""
    from pathlib import Path

    import yaml

    from lmadapt.apps.monitor.config import load_monitor_config
    from lmadapt.apps.recommend.config import load_recommend_config
    from lmadapt.apps.support.config import load_support_config

    configs = Path(__file__).resolve().parents[2] / "configs"
    recipes = sorted(configs.rglob("*.yaml"))
    assert len(recipes) >= 5
    for recipe in recipes:
        if recipe.parent.name == "support":
            bot = load_support_config(recipe)
            assert (configs.parent / bot.intent.recipe).is_file() and (configs.parent / bot.templates.path).is_file()
        elif recipe.parent.name == "monitor" and "labels" in yaml.safe_load(recipe.read_text()):
            runs = load_monitor_config(recipe).labels.runs
            named = {load_config(other).name for other in recipe.parent.glob("*.yaml") if other != recipe}
            assert {Path(path).name for path in runs.values()} <= named  # each run it reads has its recipe here
        elif recipe.parent.name == "recommend":
            assert load_recommend_config(recipe).name == recipe.stem.replace("_", "-")
        elif recipe.parent.name == "accelerate":
            continue  # accelerate's launch configs, not recipes: test_distributed reads them with accelerate's loader
        else:
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


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n", "data:\ntrain: {}\n"])
def test_a_recipe_without_settings_is_refused(tmp_path, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(LmadaptError) as error:
        load_config(path, ["train.epochs=1"])
    assert error.value.where == str(path) and "the config file has no settings" in error.value.what
    assert "configs/" in error.value.fix and "lmadapt keys" in error.value.fix
    assert load_config(None).strategy_name == "full"  # no file at all: the defaults, as before


def test_errors_about_a_key_name_its_file_line_or_override(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("name: x\ntrain:\n  batch_size: 8\n  epochs: three\n", encoding="utf-8")
    with pytest.raises(LmadaptError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}, line 4, train.epochs: expected float, got 'three'")
    assert error.value.fix == "give a number, e.g. 3 or 2e-5"
    with pytest.raises(LmadaptError) as error:
        load_config(path, ["train.epochs=2", "train.batch_size=many"])
    assert error.value.where == "--set train.batch_size=many" and "whole number" in error.value.fix
    with pytest.raises(LmadaptError, match="--set train={epochs: x}: expected float"):
        load_config(path, ["train={epochs: x}"])  # the override replaced the file's whole section

    path.write_text("name: x\nstrategy:\n  name: head\n\n  pooling: max\n")
    with pytest.raises(LmadaptError, match=r"recipe.yaml, line 5, strategy.pooling: 'max' is not a valid value"):
        load_config(path)
    path.write_text("name: x\nstrategy: lora\nmodel:\n  backbon: minilm\n")
    with pytest.raises(LmadaptError, match=r"(?s)recipe.yaml, line 4, model.backbon: unknown config key.*'backbone'"):
        load_config(path)
    path.write_text("name: x\ntrain:\n  select_best: false\ncontinual: {ewc_decay: 2}\n")
    with pytest.raises(LmadaptError, match="recipe.yaml, line 3, train.select_best: train.select_best=false keeps"):
        load_config(path, ["continual.ewc_decay=0.5"])
    with pytest.raises(LmadaptError, match="recipe.yaml, line 4, continual.ewc_decay: continual.ewc_decay must lie"):
        load_config(path, ["train.early_stopping_patience="])
    path.write_text("name: x\ndata:\n  shots_per_class: [8]\n  drop_empty: 'no'\n")
    with pytest.raises(LmadaptError, match=r"(?s)line 4, data.drop_empty: expected true or false.*give true or false"):
        load_config(path)
    with pytest.raises(LmadaptError) as error:
        load_config(path, ["data.drop_empty=false"])
    assert error.value.where == f"{path}, line 3, data.shots_per_class" and "expected int, got [8]" in str(error.value)


def test_config_keys_list_every_key_with_type_default_and_help():
    import dataclasses

    from lmadapt import config_keys
    from lmadapt.config import DataConfig, TrainConfig

    keys = {k.key: k for k in config_keys()}
    for section, cls in (("data", DataConfig), ("train", TrainConfig)):
        for f in dataclasses.fields(cls):
            assert keys[f"{section}.{f.name}"].default == f.default and keys[f"{section}.{f.name}"].help
    assert keys["data.validation"].type == "str or empty" and keys["train.epochs"].type == "float or empty"
    assert keys["train.weight_decay"].type == "float"
    assert keys["continual.experiences"].type == "list[str] or empty" and keys["seed"].default == 42
    assert keys["strategy.name"].default == "full" and "lmadapt strategies" in keys["strategy.name"].help
    assert [k.key for k in config_keys("data.test")] == ["data.test"]
    assert {k.key.split(".")[0] for k in config_keys("model")} == {"model"}
    with pytest.raises(LmadaptError, match="(?s)no config key or section 'trian'.*did you mean 'train'"):
        config_keys("trian")
    with pytest.raises(LmadaptError, match="(?s)no config key or section 'model.max'.*did you mean 'model'"):
        config_keys("model.max")  # a prefix is a section or a whole key, not part of a name
    with pytest.raises(LmadaptError, match="(?s)no config key or section 'strategy.r'.*lmadapt strategies"):
        config_keys("strategy.r")


def test_a_value_another_key_overrides_is_reported_once_loaded(caplog, tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("data:\n  validation: dev.csv\n  validation_size: 0.2\n  test_size: 0.3\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="lmadapt"):
        load_config(path)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "data.validation_size=0.2 is ignored because data.validation is set"
    ]  # test_size still splits the test rows from train
    caplog.clear()
    with caplog.at_level("WARNING", logger="lmadapt"):
        load_config(None, ["data.validation=dev.csv", "data.test=test.csv", "train.max_steps=50", "train.epochs=1"])
        load_config(None, ["data.test=test.csv", "data.test_size=0.1", "train.epochs=1"])  # defaults: no mistake
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "train.epochs=1.0 is ignored because train.max_steps is set"
    ]
    caplog.clear()
    with caplog.at_level("WARNING", logger="lmadapt"):
        load_config(
            None, ["data.test=t.csv", "data.test_size=0.2", "continual.experiences=a,b", "continual.class_groups=3"]
        )
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("data.test_size=0.2 is ignored because data.test is set")
    assert messages[1].startswith("continual.class_groups=3 is ignored because continual.experiences is set")
