"""A monitor's pipeline config: the fields items carry, the runs that label them, the windows, the detectors and
their per-topic rules, the alert receivers and the store, as dataclasses whose every field has help
(`lmadapt monitor keys` lists them)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from lmadapt.config import ConfigKey, apply_overrides, build_dataclass, option, read_recipe, section_keys
from lmadapt.errors import LmadaptError, did_you_mean
from lmadapt.inference.engines import BACKENDS

TESTS = ("binomial", "z")
DEFAULT_WINDOWS = ("15min", "1h", "1d")
RULE_KEYS = ("topic", "window", "alpha", "z", "min_count", "min_ratio", "volume_z", "enabled")


def parse_window(text: str, where: str = "windows", shortest: timedelta = timedelta(seconds=1)) -> timedelta:
    """A length of time such as 15min, 1h, 1d (pandas' offset names), of at least `shortest`."""
    import pandas as pd

    try:
        length = pd.to_timedelta(str(text)).to_pytimedelta()
    except (ValueError, TypeError):
        length = None
    if length is None or length < shortest:
        raise LmadaptError(f"'{text}' is not a window length", where=where, fix="e.g. 15min, 1h or 1d")
    return length


@dataclass
class InputConfig:
    text_field: str = option("text", "Field (column) holding the item's text.")
    time_field: str = option(
        "time", "Field holding when the item was published: ISO 8601, or seconds since 1970 (UTC)."
    )
    id_field: str | None = option(None, "Field holding the item's own id (kept with it); empty: none.")
    topic_field: str | None = option(
        None, "Field holding the item's topic, where the data gives it rather than a run (labels.topic)."
    )
    keep_fields: list[str] | None = option(None, "Other fields stored with each item (e.g. source, url).")
    format: str = option("auto", "File format for file inputs: auto (from the extension), csv, jsonl, parquet.")
    timezone: str = option("UTC", "Time zone of times written without one.")
    max_chars: int = option(10_000, "Longest text accepted; a longer item is rejected with its reason.")


@dataclass
class LabelsConfig:
    runs: dict[str, str] | None = option(
        None,
        "Runs that label every item, by the name of the label they give: e.g. {sentiment: runs/fpb-minilm-full, "
        "topic: runs/r8-minilm-lora}.",
    )
    sentiment: str = option("sentiment", "Which of the runs gives the sentiment.")
    negative_labels: list[str] | None = option(None, "Sentiment labels that count as negative; empty: negative.")
    topic: str | None = option(
        "topic",
        "Which of the runs gives the topic; empty: input.topic_field, or one topic (all) when neither is set.",
    )
    backend: str = option("auto", "Inference path of the runs: auto (the fastest here), torch, onnx-int8, ...")
    batch_size: int = option(64, "Texts in one forward pass.")


@dataclass
class DetectionConfig:
    test: str = option(
        "binomial",
        "How a window's negative share is tested against its baseline: binomial (exact, right for small counts: "
        "fires at p-value below alpha) or z (normal approximation: fires at z above z).",
    )
    alpha: float = option(0.001, "binomial: the one-sided p-value below which a window fires.")
    z: float = option(3.0, "z: the z-score above which a window fires (also reported with every alert).")
    min_count: int = option(10, "Windows with fewer items are not tested (too few to say anything).")
    min_ratio: float = option(1.5, "And the negative share must be at least this multiple of the baseline.")
    half_life_windows: float = option(
        24.0, "Half-life of the baseline (an exponentially weighted mean of past windows), in windows."
    )
    warmup_windows: int = option(12, "Windows a topic needs behind it before its baseline is trusted.")
    resolve_windows: int = option(
        2, "Hysteresis: a firing event resolves after this many windows in a row that would not fire."
    )
    cooldown_windows: int = option(4, "After an event resolves, windows before the same alert may fire again.")
    volume_z: float | None = option(
        4.0,
        "Volume spike: fires when a window's item count is this many standard deviations above its baseline "
        "(Poisson); empty: no volume detector.",
    )
    rules: list[dict[str, Any]] | None = option(
        None,
        "Per-topic overrides, data not code: e.g. [{topic: earn, window: 1h, alpha: 0.01, min_count: 5}, "
        "{topic: grain, enabled: false}]; keys: " + ", ".join(RULE_KEYS) + ".",
    )


@dataclass
class AlertsConfig:
    webhook_url: str | None = option(
        None, "Alertmanager-compatible webhook (v4 JSON body) that receives every alert; empty: none."
    )
    timeout_s: float = option(5.0, "Seconds one webhook call may take.")
    retries: int = option(5, "Further attempts after a failed webhook call, with backoff.")
    backoff_s: float = option(1.0, "Wait before the first retry; doubled each time, up to max_backoff_s.")
    max_backoff_s: float = option(60.0, "Longest wait between two attempts.")
    log_file: str | None = option(None, "File that receives every alert as one JSON line; empty: none.")
    stdout: bool = option(True, "Print every alert on the console.")
    severity: str = option("warning", "Severity label of the alerts.")
    examples: int = option(3, "Example headlines in an alert's annotations.")
    external_url: str | None = option(
        None, "The dashboard's address, for the alerts' links; empty: the served address."
    )


@dataclass
class IngestConfig:
    batch_size: int = option(256, "Items labelled and stored in one transaction.")
    allowed_lateness: str = option(
        "5min",
        "How late (behind the newest time seen) an item may arrive and still count in a window's test; later ones "
        "are stored and aggregated but the window has been tested.",
    )
    poll_s: float = option(
        1.0,
        "Following a growing file: seconds between looks for new lines; stdin: after this many quiet seconds the "
        "items read so far go in without waiting for a full batch.",
    )


@dataclass
class MonitorConfig:
    name: str = option("monitor", "The monitor's name (its store file and alerts carry it).")
    output_dir: str = option("monitors", "Folder of the default store (SQLite: <output_dir>/<name>.sqlite).")
    store: str | None = option(
        None, "Database URL: sqlite:///path.sqlite or postgresql://user:password@host:5432/db; empty: the default."
    )
    windows: list[str] | None = option(
        None, "Window lengths the items are counted and tested in; empty: " + ", ".join(DEFAULT_WINDOWS) + "."
    )
    input: InputConfig = field(default_factory=InputConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)

    @property
    def store_url(self) -> str:
        return self.store or f"sqlite:///{(Path(self.output_dir) / f'{self.name}.sqlite').resolve()}"

    @property
    def window_lengths(self) -> dict[str, timedelta]:
        """Each window's name and length, shortest first."""
        lengths = {name: parse_window(name) for name in (self.windows or DEFAULT_WINDOWS)}
        return dict(sorted(lengths.items(), key=lambda item: item[1]))

    @property
    def negative_labels(self) -> list[str]:
        return self.labels.negative_labels or ["negative"]


SECTIONS = {
    "input": InputConfig,
    "labels": LabelsConfig,
    "detection": DetectionConfig,
    "alerts": AlertsConfig,
    "ingest": IngestConfig,
}


def parse_monitor_config(raw: dict) -> MonitorConfig:
    """A checked MonitorConfig from a mapping (a recipe with overrides applied)."""
    if not isinstance(raw, dict):
        raise LmadaptError("a monitor config must be a mapping of sections (input, labels, detection, ...)")
    raw = dict(raw)
    sections = {name: build_dataclass(cls, raw.pop(name, None), name) for name, cls in SECTIONS.items()}
    config = dataclasses.replace(build_dataclass(MonitorConfig, raw, ""), **sections)
    check_monitor_config(config)
    return config


def load_monitor_config(path: str | Path | None, overrides: list[str] | None = None) -> MonitorConfig:
    """Read a monitor config (YAML) with `section.key=value` overrides; an error names the file."""
    raw = read_recipe(Path(path))[0] if path is not None else {}
    try:
        return parse_monitor_config(apply_overrides(raw or {}, overrides or []))
    except LmadaptError as error:
        if path is not None and (error.where is None or not error.where.startswith(str(path))):
            error.where = f"{path}: {error.where}" if error.where else str(path)
            error.args = (error.render(),)
        raise


def monitor_keys(prefix: str | None = None) -> list[ConfigKey]:
    """Every monitor config key (dotted) with its type, default and help."""
    keys = section_keys(MonitorConfig, "", skip=tuple(SECTIONS))
    for name, cls in SECTIONS.items():
        keys += section_keys(cls, f"{name}.")
    if prefix:
        keys = [key for key in keys if key.key == prefix or key.key.startswith(prefix.rstrip(".") + ".")]
    return keys


def _positive(value: float | None, key: str, example: str) -> None:
    if value is not None and not value > 0:
        raise LmadaptError(f"{key} must be above 0, got {value}", where=key, fix=f"e.g. {example}")


def check_rules(rules: list[dict] | None, windows: list[str]) -> None:
    for i, rule in enumerate(rules or []):
        where = f"detection.rules[{i}]"
        if not isinstance(rule, dict):
            raise LmadaptError("a rule must be a mapping", where=where, fix="e.g. {topic: earn, min_count: 5}")
        unknown = sorted(set(rule) - set(RULE_KEYS))
        if unknown:
            raise LmadaptError(f"unknown rule key '{unknown[0]}'", where=where, fix=did_you_mean(unknown[0], RULE_KEYS))
        if "window" in rule and str(rule["window"]) not in windows:
            raise LmadaptError(
                f"rule window '{rule['window']}' is not one of the monitor's windows ({', '.join(windows)})",
                where=where,
                fix="name one of `windows`, or add it there",
            )


def check_monitor_config(config: MonitorConfig) -> None:
    if config.windows is not None and not config.windows:
        raise LmadaptError("the monitor needs at least one window", where="windows", fix="e.g. [15min, 1h, 1d]")
    windows = list(config.window_lengths)  # each window parses, or the error names it
    runs = config.labels.runs or {}
    if not runs:
        raise LmadaptError(
            "no run labels the items",
            where="labels.runs",
            fix="name the runs, e.g. labels.runs={sentiment: runs/fpb-minilm-full, topic: runs/r8-minilm-lora}",
        )
    if config.labels.sentiment not in runs:
        raise LmadaptError(
            f"labels.sentiment names '{config.labels.sentiment}', which is not one of labels.runs ({', '.join(runs)})",
            where="labels.sentiment",
            fix=did_you_mean(config.labels.sentiment, list(runs)),
        )
    if config.labels.topic is not None and config.labels.topic not in runs and not config.input.topic_field:
        raise LmadaptError(
            f"labels.topic names '{config.labels.topic}', which is not one of labels.runs ({', '.join(runs)})",
            where="labels.topic",
            fix="name one of the runs, set input.topic_field, or set labels.topic=null for one topic",
        )
    if config.labels.backend not in BACKENDS:
        raise LmadaptError(
            f"labels.backend '{config.labels.backend}' is not an inference backend",
            where="labels.backend",
            fix=did_you_mean(config.labels.backend, BACKENDS),
        )
    if config.detection.test not in TESTS:
        raise LmadaptError(
            f"detection.test '{config.detection.test}' is not one of {', '.join(TESTS)}",
            where="detection.test",
            fix=did_you_mean(config.detection.test, TESTS),
        )
    if not 0 < config.detection.alpha < 1:
        raise LmadaptError(
            f"detection.alpha must lie in (0, 1), got {config.detection.alpha}",
            where="detection.alpha",
            fix="e.g. 0.001",
        )
    _positive(config.detection.z, "detection.z", "3")
    _positive(config.detection.half_life_windows, "detection.half_life_windows", "24")
    _positive(config.detection.volume_z, "detection.volume_z", "4")
    _positive(config.labels.batch_size, "labels.batch_size", "64")
    _positive(config.ingest.batch_size, "ingest.batch_size", "256")
    _positive(config.input.max_chars, "input.max_chars", "10000")
    for key in ("min_count", "warmup_windows", "resolve_windows", "cooldown_windows"):
        if getattr(config.detection, key) < 0:
            raise LmadaptError(f"detection.{key} must be 0 or more", where=f"detection.{key}", fix="e.g. 2")
    if config.alerts.retries < 0:
        raise LmadaptError("alerts.retries must be 0 or more", where="alerts.retries", fix="e.g. 5")
    parse_window(config.ingest.allowed_lateness, "ingest.allowed_lateness", timedelta(0))
    check_rules(config.detection.rules, windows)
