"""A run's recipe: the run configuration with its strategy section, which the strategy registry defines.

`lmadapt.config` knows the sections and how YAML and `--set` overrides become dataclasses; this module adds
the `strategy` section (its `name` picks the strategy, whose config class checks the other options).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmadapt.config import (
    SECTIONS,
    ConfigKey,
    ContinualConfig,
    DataConfig,
    ModelConfig,
    OodConfig,
    RunConfig,
    TrainConfig,
    apply_overrides,
    build_dataclass,
    check_run_config,
    key_origin,
    read_recipe,
    section_keys,
    warn_ignored_keys,
)
from lmadapt.errors import LmadaptError, nearest
from lmadapt.strategies import STRATEGIES, get_strategy

DEFAULT_STRATEGY = "full"


def parse_config(raw: dict[str, Any]) -> RunConfig:
    """Turn a raw mapping (from YAML plus overrides) into a checked RunConfig."""
    if not isinstance(raw, dict):
        raise LmadaptError("a config must be a mapping of sections (data, model, strategy, train)")
    raw = dict(raw)
    built: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        section = raw.pop(name, None)
        # The continual section stays absent unless given: `lmadapt continual` requires one.
        built[name] = None if name == "continual" and section is None else build_dataclass(cls, section, name)
    strategy_raw = raw.pop("strategy", None) or {}
    if isinstance(strategy_raw, str):
        strategy_raw = {"name": strategy_raw}
    if not isinstance(strategy_raw, dict):
        raise LmadaptError("expected a mapping with a `name`", where="strategy")
    strategy_raw = dict(strategy_raw)
    spec = get_strategy(str(strategy_raw.pop("name", DEFAULT_STRATEGY)))
    built["strategy"] = build_dataclass(spec.config_class, strategy_raw, "strategy")
    top = build_dataclass(RunConfig, raw, "")
    for name, value in built.items():
        setattr(top, name, value)
    if top.model.backbone is None:
        top.model.backbone = spec.default_backbone
    check_run_config(top)
    return top


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML recipe (or start from defaults), apply overrides, and check it.

    An error about a key names the recipe's file and line, or the `--set` item, that gave its value."""
    raw: dict[str, Any] = {}
    lines: dict[str, int] = {}
    if path is not None:
        path = Path(path)
        raw, lines = read_recipe(path)
    overrides = overrides or []
    raw = apply_overrides(raw, overrides)
    set_by = {item.split("=", 1)[0].strip(): item for item in overrides}
    try:
        config = parse_config(raw)
    except LmadaptError as error:
        if error.where is None:
            error.where = str(path) if path is not None else None
        elif not error.where.startswith("--set "):
            error.where = key_origin(error.where, path, lines, set_by)
        error.args = (error.render(),)
        raise
    warn_ignored_keys(config)
    return config


def config_keys(prefix: str | None = None) -> list[ConfigKey]:
    """Every config key (dotted) with its type, default and help, by section: data, model, strategy (its name;
    `lmadapt strategies` lists each strategy's options), train, ood, continual, then the top-level keys. `prefix` (a
    section or a key) keeps the keys under it."""
    strategy_name = ConfigKey(
        "strategy.name",
        "str",
        DEFAULT_STRATEGY,
        f"Adaptation strategy: {', '.join(STRATEGIES)}. Each has options of its own, strategy.<option>: "
        "`lmadapt strategies` lists them.",
    )
    keys = [*section_keys(DataConfig, "data."), *section_keys(ModelConfig, "model."), strategy_name]
    keys += [*section_keys(TrainConfig, "train."), *section_keys(OodConfig, "ood.")]
    keys += section_keys(ContinualConfig, "continual.")
    keys += section_keys(RunConfig, "", skip=(*SECTIONS, "strategy"))
    if prefix is None:
        return keys
    prefix = prefix.strip().rstrip(".")
    chosen = [k for k in keys if k.key == prefix or k.key.startswith(f"{prefix}.")]
    if not chosen:
        sections = sorted({k.key.split(".")[0] for k in keys if "." in k.key})
        suggestion = nearest(prefix, sections) or nearest(prefix, [k.key for k in keys])
        options = "strategy options are listed by `lmadapt strategies`; " if prefix.startswith("strategy.") else ""
        raise LmadaptError(
            f"no config key or section '{prefix}'",
            where="keys PREFIX",
            fix=(f"did you mean '{suggestion}'? " if suggestion else "")
            + f"{options}sections: {', '.join(sections)}; `lmadapt keys` lists every key",
        )
    return chosen
