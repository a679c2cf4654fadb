"""Run configuration: YAML recipes mapped one to one onto dataclasses.

Every field carries help text in its metadata. Unknown keys are an error that names the key and the
nearest valid one; `--set a.b=c` overrides are applied to the raw mapping before it is checked.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmadapt.errors import LmadaptError, did_you_mean

log = logging.getLogger(__name__)


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with help text (and a default)."""
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class DataConfig:
    train: str = option(
        "builtin:rotten_tomatoes",
        "Training data: a CSV/TSV/JSONL/Parquet file, a saved HF dataset folder, 'hf:<hub id>' "
        "(online), or 'builtin:<name>' for data shipped in a registry package.",
    )
    validation: str | None = option(None, "Validation data; when absent it is split from train.")
    test: str | None = option(None, "Test data; when absent it is split from train.")
    format: str = option("auto", "File format: auto (from the extension), csv, tsv, jsonl, parquet, hf.")
    text_column: str = option("text", "Column holding the text.")
    text_pair_column: str | None = option(None, "Optional second text column (sentence-pair tasks).")
    label_column: str = option("label", "Column holding the label(s).")
    task: str = option(
        "single_label",
        "single_label (one label per text) or multi_label (several labels per text: a delimited "
        "string in CSV/TSV, a list in JSONL).",
    )
    label_delimiter: str = option("|", "Separator between labels of one text in multi-label CSV/TSV.")
    validation_size: float = option(0.1, "Share of train held out for validation when none is given.")
    test_size: float = option(0.1, "Share of train held out for test when none is given.")
    max_train_rows: int | None = option(
        None, "Keep a seeded, stratified subset of this many training rows (after splitting)."
    )
    shots_per_class: int | None = option(
        None,
        "Few-shot learning: keep k training rows per class (seeded, stratified; after splitting). For one "
        "seed the rows are nested: the 8-shot set is part of the 16-shot set.",
    )
    normalize_unicode: bool = option(True, "Apply Unicode NFKC normalisation and collapse whitespace.")
    drop_empty: bool = option(False, "Drop rows whose text is empty; when false an empty text is an error.")
    deduplicate: bool = option(True, "Drop exact duplicate texts within each split.")
    drop_leaks: bool = option(True, "Remove validation/test texts that also occur in train (reported either way).")


@dataclass
class ModelConfig:
    backbone: str | None = option(
        None,
        "Backbone: a local folder, a packaged alias (see `lmadapt models`), or a hub id; empty: the "
        "strategy's default (minilm; smollm2 for strategies that read a causal LM's words).",
    )
    max_length: int = option(128, "Longest input in tokens; longer texts are truncated.")
    trust_remote_code: bool = option(False, "Allow custom modelling code from the model folder or hub.")
    max_unknown_share: float = option(
        0.1,
        "Stop before training, and a trained run before predicting, when more than this share of the texts' "
        "tokens is unknown to the backbone's tokenizer (it cannot read their language, e.g. Chinese with the "
        "English minilm); 1 turns the check off.",
    )


@dataclass
class TrainConfig:
    epochs: float | None = option(
        None,
        "Training epochs (an upper bound when early stopping is on). Empty: derived from the training rows, about "
        "1,300 optimiser steps between 1 and 10 epochs (strategies that train on their own: their default).",
    )
    batch_size: int = option(32, "Training batch size per device.")
    eval_batch_size: int = option(64, "Evaluation batch size per device.")
    learning_rate: float | None = option(
        None,
        "Peak learning rate. Empty: the strategy's default (see `lmadapt strategies`), which for full and lora "
        "rises with the number of classes (full: 1e-4 on 2 classes to 2e-4 on 77).",
    )
    head_learning_rate: float | None = option(
        None,
        "Learning rate of the new classification head, when it should differ from learning_rate: a fresh "
        "head over many classes learns faster at a higher rate than the adapter below it. Empty: the same rate "
        "as the rest, except for lora, where it rises with the number of classes (to 1e-2 on 77).",
    )
    weight_decay: float = option(0.01, "AdamW weight decay.")
    warmup_ratio: float | None = option(
        None,
        "Share of steps for linear learning-rate warm-up; default: the strategy's (see `lmadapt strategies`): "
        "none for full fine-tuning (measured on SST-2 over 3 seeds: 10% warm-up cost up to 3 points), "
        "10% for strategies that train at high learning rates.",
    )
    lr_scheduler: str = option("linear", "Learning-rate schedule after warm-up: linear, cosine, constant.")
    gradient_accumulation_steps: int = option(1, "Batches accumulated per optimiser step.")
    early_stopping_patience: int | None = option(
        2, "Stop after this many epochs without a better validation macro-F1; empty disables."
    )
    select_best: bool = option(
        True,
        "Evaluate on validation each epoch and restore the best epoch's weights at the end. Turn it off (with "
        "early_stopping_patience empty) when validation is the evaluation set, as in few-shot protocols: "
        "then the last epoch's weights are kept and validation is read once, after training.",
    )
    class_weights: bool = option(
        False, "Weight the loss by inverse class frequency (pos_weight per label for multi-label)."
    )
    precision: str = option(
        "auto",
        "auto (bf16 autocast where the hardware supports it, else fp32), bf16, or fp32.",
    )
    group_by_length: bool = option(True, "Group texts of similar length into batches (much less padding, faster).")
    logging_steps: int = option(20, "Log loss and learning rate every this many steps.")
    max_steps: int = option(-1, "Stop after this many optimiser steps (-1: run all epochs).")


CONTINUAL_METHODS = ("naive", "replay", "ewc", "lwf", "joint")
MEMORY_POLICIES = ("class_balanced", "reservoir")


@dataclass
class ContinualConfig:
    experiences: list[str] | None = option(
        None,
        "The stream, in order: one data source per experience (files or builtin:<name>), e.g. the "
        "domain-incremental builtin:vader_movies,builtin:vader_amazon,builtin:vader_tweets. Empty: data.train "
        "split into class_groups class-incremental experiences.",
    )
    class_groups: int = option(
        5, "Class-incremental stream: data.train's labels split into this many disjoint, seeded groups."
    )
    method: str = option(
        "replay",
        "How each new experience is learned: naive (fine-tune on it alone), replay (mix in a bounded memory of "
        "past examples), ewc (online elastic weight consolidation), lwf (distil the previous model on the new "
        "data), or joint (all experiences' data at once: the upper bound).",
    )
    methods: list[str] | None = option(
        None, "Methods `lmadapt continual` runs on the stream and compares; empty: all of them."
    )
    memory_size: int = option(500, "Replay: most past examples kept in memory (and in the run folder).")
    memory_policy: str = option(
        "class_balanced",
        "Replay: which examples stay: class_balanced (equal room per label seen) or reservoir (a uniform "
        "sample of everything seen).",
    )
    ewc_lambda: float = option(
        1e4, "EWC: strength of the pull toward earlier experiences' weights, scaled by their Fisher information."
    )
    ewc_decay: float = option(
        1.0, "Online EWC: weight of the accumulated Fisher information when a new experience's is added."
    )
    fisher_samples: int = option(
        500, "EWC: training examples (one gradient each) that estimate an experience's Fisher information."
    )
    lwf_alpha: float = option(1.0, "LwF: weight of the distillation loss on the previous model's labels.")
    lwf_temperature: float = option(2.0, "LwF: softmax temperature of the distillation.")


OOD_METHODS = ("msp", "energy", "mahalanobis", "knn")


@dataclass
class OodConfig:
    method: str = option(
        "none",
        "How a trained classifier scores a text as out of scope, to answer `abstain_label` instead of one of its "
        "labels: msp (1 - the highest label probability), energy (minus the log-sum-exp of the logits), "
        "mahalanobis (distance of the text's features to the nearest class mean, shared covariance), knn "
        "(distance to the k-th nearest training text in the normalised feature space), auto (the one of these that "
        "abstains on the most out-of-scope validation rows at its threshold; needs such rows), or none (always "
        "answer a label).",
    )
    label: str | None = option(
        None,
        "The data's out-of-scope label (e.g. oos): its validation rows measure each method (and let auto choose) and "
        "its test rows are measured as out of scope; with train_as_class=false its training rows are not trained on.",
    )
    train_as_class: bool = option(
        False,
        "Also train `label` as a class: predicting it is an abstention too (needs training rows of it).",
    )
    holdout_share: float = option(
        0.0,
        "Leave-classes-out, when the data has no out-of-scope label: this seeded share of the labels (at least "
        "one) is held out of training, and their validation and test rows become out-of-scope rows (to measure "
        "each method and let auto choose). 0: none.",
    )
    max_in_scope_loss: float = option(
        0.02,
        "The threshold abstains on as many texts as it can while the in-scope accuracy on validation falls at most "
        "this much below the accuracy without abstention (0.02: two points; abstaining on a text the model gets "
        "wrong costs nothing). Out-of-scope validation rows are not needed for it.",
    )
    target_in_scope_recall: float | None = option(
        None,
        "Instead of max_in_scope_loss: set the threshold so that this share of the in-scope validation rows is "
        "still answered (e.g. 0.95).",
    )
    ambiguity_gap: float | None = option(
        None,
        "Also abstain when the two most probable labels are closer than this in probability (Rasa's "
        "ambiguity_threshold, e.g. 0.1). Empty: never for this reason.",
    )
    abstain_label: str = option("unknown", "The label an abstention answers.")
    knn_k: int = option(10, "knn: the neighbour whose distance is the score (the k-th nearest training text).")
    max_bank_rows: int = option(
        20000,
        "knn: most training texts kept in the feature bank (a seeded sample beyond it); it is saved with the run.",
    )


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "ood": OodConfig,
    "continual": ContinualConfig,
}
# Each strategy's config class -> the strategy's name; the strategy registry (lmadapt.strategies) fills it.
STRATEGY_NAMES: dict[type, str] = {}


@dataclass
class RunConfig:
    name: str = option("run", "Run name; the run folder is <output_dir>/<name>.")
    seed: int = option(42, "Seed for splits, initialisation and data order.")
    output_dir: str = option("runs", "Folder that receives run folders.")
    data: DataConfig = option(None, "Data section.")
    model: ModelConfig = option(None, "Backbone section.")
    strategy: Any = option(None, "Strategy section: `name` plus that strategy's options.")
    train: TrainConfig = option(None, "Training section.")
    ood: OodConfig = option(None, "Out-of-scope detection section: when a prediction answers 'none of these'.")
    continual: ContinualConfig | None = option(
        None, "Continual-learning section (`lmadapt continual`, `lmadapt update`): the stream and the method."
    )

    def __post_init__(self) -> None:
        self.data = self.data or DataConfig()
        self.model = self.model or ModelConfig()
        self.train = self.train or TrainConfig()
        self.ood = self.ood or OodConfig()

    @property
    def strategy_name(self) -> str:
        name = STRATEGY_NAMES.get(type(self.strategy))  # exact type: one strategy's config may extend another's
        if name is None:
            raise TypeError(f"{type(self.strategy).__name__} is not a registered strategy config")
        return name

    def to_dict(self) -> dict[str, Any]:
        raw = dataclasses.asdict(self)
        raw["strategy"] = {"name": self.strategy_name, **dataclasses.asdict(self.strategy)}
        return raw

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def require_positive(value: float | None, key: str, fix: str | None = None) -> None:
    """`value` (when given) above 0; NaN is not."""
    if value is not None and not value > 0:
        raise LmadaptError(f"{key} must be positive, got {value}", where=key, fix=fix)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


# How to write a value of each type in YAML, for the fix of a wrong-type error.
_TYPE_FIXES = {
    float: "give a number, e.g. 3 or 2e-5",
    int: "give a whole number, e.g. 3",
    str: "put the text in quotes, e.g. 'yes' (YAML reads yes, no, on, off unquoted as true or false)",
    list: "give a list, e.g. [a, b], or comma-separated text a,b",
}


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check (and gently convert) a value against a field's type hint."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, options[0], where)
    if hint is Any:
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise LmadaptError(f"expected a mapping, got {value!r}", where=where, fix="give a mapping of key: value")
        key_hint, value_hint = typing.get_args(hint)
        return {_coerce(k, key_hint, where): _coerce(v, value_hint, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        # A YAML list, or a comma-separated string as `--set key=a,b` gives.
        items = [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value
        if isinstance(items, list):
            return [_coerce(item, typing.get_args(hint)[0], where) for item in items]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise LmadaptError(f"expected true or false, got {value!r}", where=where, fix="give true or false")
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        # YAML 1.1 reads "2e-4" (no dot) as a string; it is plainly a number.
        try:
            return float(value)
        except ValueError:
            pass
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    if hint is str and isinstance(value, (dict, list)):
        raise LmadaptError(
            f"expected text, got {value!r}",
            where=where,
            fix="put the value in quotes: YAML reads text that starts with { or [ as a mapping or a list",
        )
    raise LmadaptError(f"expected {_type_name(hint)}, got {value!r}", where=where, fix=_TYPE_FIXES.get(origin or hint))


def build_dataclass(cls: type, raw: Any, where: str) -> Any:
    """Build dataclass `cls` from a mapping, rejecting unknown keys with a suggestion."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise LmadaptError(f"expected a mapping of options, got {raw!r}", where=where)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    values = {}
    for key, value in raw.items():
        key_where = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise LmadaptError(f"unknown config key '{key_where}'", where=key_where, fix=did_you_mean(str(key), names))
        values[key] = _coerce(value, hints[key], key_where)
    return cls(**values)


def require_choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise LmadaptError(f"'{value}' is not a valid value for {key}", where=key, fix=did_you_mean(value, allowed))


def check_data_config(data: DataConfig) -> None:
    require_choice("data.format", data.format, ("auto", "csv", "tsv", "jsonl", "parquet", "hf"))
    require_choice("data.task", data.task, ("single_label", "multi_label"))
    if not data.label_delimiter:
        raise LmadaptError("data.label_delimiter must not be empty", where="data.label_delimiter", fix="use e.g. '|'")
    for key in ("validation_size", "test_size"):
        share = getattr(data, key)
        if not 0.0 < share < 0.5:
            raise LmadaptError(
                f"data.{key} must lie between 0 and 0.5, got {share}", where=f"data.{key}", fix="e.g. 0.1"
            )


def _require_positive(config: RunConfig, keys: tuple[str, ...]) -> None:
    for key in keys:
        section, name = key.split(".")
        require_positive(getattr(getattr(config, section), name), key)


def check_run_config(config: RunConfig) -> None:
    check_data_config(config.data)
    require_choice("train.precision", config.train.precision, ("auto", "bf16", "fp32"))
    require_choice("train.lr_scheduler", config.train.lr_scheduler, ("linear", "cosine", "constant"))
    _require_positive(
        config,
        (
            "train.epochs",
            "train.batch_size",
            "train.eval_batch_size",
            "train.gradient_accumulation_steps",
            "train.logging_steps",
            "train.learning_rate",
            "train.head_learning_rate",
            "train.early_stopping_patience",
            "model.max_length",
            "data.max_train_rows",
            "data.shots_per_class",
        ),
    )
    if config.continual is not None:
        _check_continual(config.continual)
    _check_ood(config)
    if not config.train.select_best and config.train.early_stopping_patience:
        raise LmadaptError(
            "train.select_best=false keeps the last epoch, but early stopping picks an epoch on validation",
            where="train.select_best",
            fix="also set train.early_stopping_patience= (empty), or keep select_best",
        )
    if not 0.0 <= config.model.max_unknown_share <= 1.0:
        raise LmadaptError(
            f"model.max_unknown_share must lie in [0, 1], got {config.model.max_unknown_share}",
            where="model.max_unknown_share",
            fix="e.g. 0.1; 1 turns the check off",
        )
    if config.train.warmup_ratio is not None and not 0.0 <= config.train.warmup_ratio < 1.0:
        raise LmadaptError(
            f"train.warmup_ratio must lie in [0, 1), got {config.train.warmup_ratio}",
            where="train.warmup_ratio",
            fix="e.g. 0.1, or empty for the strategy's default",
        )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", config.name):
        raise LmadaptError(
            f"run name '{config.name}' is not a plain folder name",
            where="name",
            fix="use letters, digits, '.', '_' and '-', starting with a letter or digit",
        )


def _check_continual(continual: ContinualConfig) -> None:
    require_choice("continual.method", continual.method, CONTINUAL_METHODS)
    for method in continual.methods or ():
        require_choice("continual.methods", method, CONTINUAL_METHODS)
    require_choice("continual.memory_policy", continual.memory_policy, MEMORY_POLICIES)
    for key in ("class_groups", "memory_size", "ewc_lambda", "fisher_samples", "lwf_temperature"):
        require_positive(getattr(continual, key), f"continual.{key}")
    if continual.class_groups < 2 and not continual.experiences:
        raise LmadaptError(
            "a class-incremental stream needs continual.class_groups of 2 or more",
            where="continual.class_groups",
            fix="e.g. 5, or list the stream's sources in continual.experiences",
        )
    if not 0.0 <= continual.ewc_decay <= 1.0:
        raise LmadaptError(
            f"continual.ewc_decay must lie in [0, 1], got {continual.ewc_decay}",
            where="continual.ewc_decay",
            fix="e.g. 1.0 (keep all earlier Fisher information); 0 keeps only the newest",
        )


def _require_share(value: float | None, key: str, fix: str, zero_ok: bool = False) -> None:
    """A share below 1, above 0 (or 0 itself where `zero_ok`); None passes."""
    if value is None:
        return
    above_zero = value >= 0.0 if zero_ok else value > 0.0
    if not (above_zero and value < 1.0):
        interval = "[0, 1)" if zero_ok else "(0, 1)"
        raise LmadaptError(f"{key} must lie in {interval}, got {value}", where=key, fix=fix)


def _check_ood(config: RunConfig) -> None:
    ood = config.ood
    require_choice("ood.method", ood.method, ("none", "auto", *OOD_METHODS))
    if ood.method == "none":
        return
    if config.data.task != "single_label":
        raise LmadaptError(
            "out-of-scope detection is for single-label classifiers (a multi-label model already answers no label "
            "when every score is under its threshold)",
            where="ood.method",
            fix="set ood.method=none, or data.task=single_label",
        )
    _require_share(ood.target_in_scope_recall, "ood.target_in_scope_recall", "e.g. 0.95 (answer 95% of in-scope texts)")
    _require_share(ood.max_in_scope_loss, "ood.max_in_scope_loss", "e.g. 0.02 (two points of accuracy)", zero_ok=True)
    _require_share(ood.holdout_share, "ood.holdout_share", "e.g. 0.1", zero_ok=True)
    if ood.holdout_share and ood.label:
        raise LmadaptError(
            "ood.holdout_share holds labels out as pseudo out-of-scope data, but ood.label names real ones",
            where="ood.holdout_share",
            fix="use one of them: ood.label when the data has out-of-scope rows, else ood.holdout_share",
        )
    if ood.train_as_class and not ood.label:
        raise LmadaptError(
            "ood.train_as_class trains the out-of-scope label as a class, but ood.label is empty",
            where="ood.train_as_class",
            fix="name the data's out-of-scope label in ood.label (e.g. oos)",
        )
    _require_share(ood.ambiguity_gap, "ood.ambiguity_gap", "e.g. 0.1, or empty")
    require_positive(ood.knn_k, "ood.knn_k")
    require_positive(ood.max_bank_rows, "ood.max_bank_rows")
    if not ood.abstain_label.strip():
        raise LmadaptError("ood.abstain_label is empty", where="ood.abstain_label", fix="e.g. unknown")


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=c` overrides (values parsed as YAML) to a raw config mapping."""
    raw = yaml.safe_load(yaml.safe_dump(raw)) or {}
    for item in overrides:
        if "=" not in item:
            raise LmadaptError(f"override '{item}' has no '='", where="--set", fix="write it as section.key=value")
        dotted, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text  # not YAML (e.g. a glob or '[x'): take it as the string it is
        keys = dotted.strip().split(".")
        node = raw
        for key in keys[:-1]:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise LmadaptError(f"'{key}' is not a section", where=f"--set {item}")
            node = child
        node[keys[-1]] = value
    return raw


@dataclass(frozen=True)
class ConfigKey:
    """One config key, as `lmadapt keys` lists it."""

    key: str
    type: str
    default: Any
    help: str


def _type_label(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_label(a) if a is not type(None) else "empty" for a in typing.get_args(hint))
    return str(hint) if typing.get_origin(hint) else _type_name(hint)


def section_keys(cls: type, prefix: str, skip: tuple[str, ...] = ()) -> list[ConfigKey]:
    hints = typing.get_type_hints(cls)
    return [
        ConfigKey(f"{prefix}{f.name}", _type_label(hints[f.name]), f.default, f.metadata["help"])
        for f in dataclasses.fields(cls)
        if f.name not in skip
    ]


def _is_set(value: Any) -> bool:
    return value > 0 if isinstance(value, (int, float)) else bool(value)  # train.max_steps is -1 when unset


# (key, key that wins over it when set, what happens then): recipe values the run would silently ignore.
IGNORED_WHEN = (
    ("data.validation_size", "data.validation", "the validation rows are that file's, none are split from train"),
    ("data.test_size", "data.test", "the test rows are that file's, none are split from train"),
    ("train.epochs", "train.max_steps", "training stops after max_steps optimiser steps, however many epochs"),
    ("continual.class_groups", "continual.experiences", "the stream is those sources, not data.train's labels"),
)


def warn_ignored_keys(config: RunConfig) -> list[str]:
    """Warn (log, and return the warnings) about each key a user changed from its default that another key
    overrides, e.g. data.validation_size when data.validation names a file."""
    defaults = {k.key: k.default for name, cls in SECTIONS.items() for k in section_keys(cls, f"{name}.")}
    warnings = []
    for ignored, winner, effect in IGNORED_WHEN:
        if config.continual is None and ignored.startswith("continual."):
            continue
        value = functools.reduce(getattr, ignored.split("."), config)
        if value != defaults[ignored] and _is_set(functools.reduce(getattr, winner.split("."), config)):
            warnings.append(f"{ignored}={value} is ignored because {winner} is set: {effect}")
            log.warning(warnings[-1])
    return warnings


def _key_lines(node: yaml.Node | None, prefix: str = "") -> dict[str, int]:
    """Line (1-based) of every dotted key path in a composed YAML mapping, e.g. {"train.epochs": 4}."""
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, f"{key}."))
    return lines


def _parse_yaml(path: Path) -> tuple[Any, dict[str, int]]:
    """The YAML document in `path` and the line of each key in it."""
    try:
        loader = yaml.SafeLoader(path.read_bytes().decode("utf-8"))
        try:
            node = loader.get_single_node()
            return (loader.construct_document(node) if node is not None else None), _key_lines(node)
        finally:
            loader.dispose()
    except UnicodeDecodeError:
        raise LmadaptError("the config is not UTF-8 text", where=str(path), fix="save it as UTF-8") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}" if mark else str(path)
        raise LmadaptError(f"not valid YAML ({getattr(error, 'problem', error)})", where=where) from None


def read_recipe(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """A YAML recipe's mapping and the line of each key in it; a missing file, one that is not a mapping, or one
    without settings is refused."""
    if not path.is_file():
        raise LmadaptError(f"config file not found: {path}", fix="check the path")
    raw, lines = _parse_yaml(path)
    if raw is not None and not isinstance(raw, dict):
        raise LmadaptError("a config must be a YAML mapping", where=str(path))
    if not any(value not in (None, {}) for value in (raw or {}).values()):
        raise LmadaptError(
            "the config file has no settings (running it would train on the built-in defaults)",
            where=str(path),
            fix="start from a recipe in configs/, e.g. configs/sentiment/minilm_full.yaml; `lmadapt keys` "
            "lists every key",
        )
    return raw, lines


def key_origin(key: str, path: Path | None, lines: dict[str, int], overrides: dict[str, str]) -> str:
    """Where the value of a dotted key came from: the `--set` item that gave it (or one of its sections), else
    its line in the recipe (or its section's), else the key itself."""
    parts = key.split(".")
    ancestry = [".".join(parts[:n]) for n in range(len(parts), 0, -1)]  # the key first, then its sections
    override = next((overrides[k] for k in ancestry if k in overrides), None)
    if override is not None:
        return f"--set {override}"
    if path is None:
        return key
    line = next((lines[k] for k in ancestry if k in lines), None)
    return f"{path}, line {line}, {key}" if line else f"{path}, {key}"
