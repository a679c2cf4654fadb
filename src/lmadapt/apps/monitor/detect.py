"""The detectors: per topic and window, a surge of the negative share over its baseline and a spike of the item
count over its rate, each with hysteresis, so one event raises one firing alert and one resolved alert.

The caller feeds each (topic, window) its closed windows in time order, empty ones included once the topic has been
seen. Everything a detector has learnt lives in `state()`, plain JSON, so a restarted monitor resumes exactly."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from datetime import datetime

from scipy.stats import binom

from lmadapt.apps.monitor.config import RULE_KEYS, TESTS, DetectionConfig
from lmadapt.apps.monitor.events import FIRING, NEGATIVE_SHARE_SURGE, RESOLVED, VOLUME_SPIKE, AlertEvent, Bucket
from lmadapt.errors import LmadaptError, did_you_mean

STATE_VERSION = 1
# A baseline of exactly 0 would make one negative item infinitely surprising (and 1 would make nothing surprising);
# 1% is below the negative share of any real news topic, so the clamp only matters for topics without history.
BASELINE_FLOOR = 0.01


@dataclass(frozen=True)
class Settings:
    """The detection settings of one (topic, window): the config's, overridden by the rules that match it."""

    alpha: float
    z: float
    min_count: int
    min_ratio: float
    volume_z: float | None
    enabled: bool = True


RULE_SETTINGS = tuple(f.name for f in fields(Settings))


def _check_rule_values(rules: list[dict]) -> None:
    for i, rule in enumerate(rules):
        where = f"detection.rules[{i}]"
        if not isinstance(rule, dict):
            raise LmadaptError("a rule must be a mapping", where=where, fix="e.g. {topic: earn, min_count: 5}")
        unknown = sorted(set(rule) - set(RULE_KEYS))
        if unknown:
            raise LmadaptError(f"unknown rule key '{unknown[0]}'", where=where, fix=did_you_mean(unknown[0], RULE_KEYS))
        if "alpha" in rule and not 0 < float(rule["alpha"]) < 1:
            raise LmadaptError(f"alpha must lie in (0, 1), got {rule['alpha']}", where=where, fix="e.g. 0.01")
        for key in ("z", "min_ratio", "volume_z"):
            if rule.get(key) is not None and not float(rule[key]) > 0:
                raise LmadaptError(f"{key} must be above 0, got {rule[key]}", where=where, fix="e.g. 3")
        if "min_count" in rule and int(rule["min_count"]) < 0:
            raise LmadaptError(f"min_count must be 0 or more, got {rule['min_count']}", where=where, fix="e.g. 5")


def settings_for(config: DetectionConfig, topic: str, window: str) -> Settings:
    """The settings of one (topic, window). Every matching rule applies, least specific first, so for each key the
    most specific rule that sets it wins (topic and window over topic over window alone; a later rule over an
    earlier one of the same specificity)."""
    settings = Settings(config.alpha, config.z, config.min_count, config.min_ratio, config.volume_z)
    matching = []
    for order, rule in enumerate(config.rules or []):
        if "topic" in rule and str(rule["topic"]) != topic:
            continue
        if "window" in rule and str(rule["window"]) != window:
            continue
        matching.append((2 * ("topic" in rule) + ("window" in rule), order, rule))
    for _, _, rule in sorted(matching, key=lambda match: match[:2]):
        settings = replace(settings, **{key: value for key, value in rule.items() if key in RULE_SETTINGS})
    return settings


@dataclass
class Hysteresis:
    """One alert of one (topic, window): whether an event is open, since when, and the countdowns that close it and
    keep a new one from opening straight after."""

    active: bool = False
    starts_at: str | None = None  # ISO time of the first firing window's start
    last_fired_end: str | None = None  # ISO time of the last firing window's end
    last_values: dict | None = None  # the last firing window's values, carried by the resolved alert
    quiet: int = 0  # windows in a row that would not fire, while active
    cooldown: int = 0  # windows left before this alert may fire again, after a resolve

    def step(
        self, fires: bool, bucket: Bucket, values: dict, resolve_windows: int, cooldown_windows: int
    ) -> str | None:
        """Advance by one window; FIRING or RESOLVED when the window opens or closes an event. A window that would
        fire during the cooldown opens nothing."""
        if self.active:
            if fires:
                self.last_fired_end, self.last_values, self.quiet = bucket.end.isoformat(), values, 0
                return None
            self.quiet += 1
            if self.quiet < resolve_windows:
                return None
            self.active, self.quiet, self.cooldown = False, 0, cooldown_windows
            return RESOLVED
        if self.cooldown > 0:
            self.cooldown -= 1
            return None
        if not fires:
            return None
        self.active, self.quiet = True, 0
        self.starts_at, self.last_fired_end, self.last_values = bucket.start.isoformat(), bucket.end.isoformat(), values
        return FIRING


@dataclass
class Series:
    """What the detectors know about one (topic, window). The baselines are exponentially weighted sums, decayed by
    one factor per window: the share's baseline is negatives over items (each window's share weighed by its count,
    so a window of 2 items moves it less than one of 200), the rate is items over windows."""

    last_end: str | None = None
    windows_with_items: int = 0
    negatives_sum: float = 0.0
    count_sum: float = 0.0
    volume_sum: float = 0.0
    volume_weight: float = 0.0
    share_alert: Hysteresis = field(default_factory=Hysteresis)
    volume_alert: Hysteresis = field(default_factory=Hysteresis)

    def to_json(self) -> dict:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["share_alert"] = vars(self.share_alert).copy()
        data["volume_alert"] = vars(self.volume_alert).copy()
        return data

    @classmethod
    def from_json(cls, data: dict) -> Series:
        data = dict(data)
        share_alert, volume_alert = Hysteresis(**data.pop("share_alert")), Hysteresis(**data.pop("volume_alert"))
        return cls(**data, share_alert=share_alert, volume_alert=volume_alert)


class Detectors:
    """Negative-share surge and volume spike detection for every (topic, window) fed to `observe`."""

    def __init__(self, config: DetectionConfig, severity: str = "warning", state: dict | None = None):
        if config.test not in TESTS:
            raise LmadaptError(
                f"detection.test '{config.test}' is not one of {', '.join(TESTS)}",
                where="detection.test",
                fix=did_you_mean(config.test, TESTS),
            )
        _check_rule_values(config.rules or [])
        self.config = config
        self.severity = severity
        # Each window multiplies the past's weight by this, so it halves every half_life_windows windows.
        self.decay = 0.5 ** (1.0 / config.half_life_windows)
        self.series: dict[tuple[str, str], Series] = {}
        self._settings: dict[tuple[str, str], Settings] = {}
        if state is not None:
            self._load(state)

    def _load(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise LmadaptError(
                f"the detectors' saved state is not version {STATE_VERSION}",
                where="detector state",
                fix="start the detectors afresh (drop the saved state); they warm up again from new windows",
            )
        for entry in state["series"]:
            entry = dict(entry)
            key = (entry.pop("topic"), entry.pop("window"))
            self.series[key] = Series.from_json(entry)

    def state(self) -> dict:
        """Everything learnt so far, as plain JSON: Detectors(config, state=...) continues from it exactly."""
        series = [{"topic": topic, "window": window, **s.to_json()} for (topic, window), s in self.series.items()]
        return {"version": STATE_VERSION, "series": series}

    def settings(self, topic: str, window: str) -> Settings:
        key = (topic, window)
        if key not in self._settings:
            self._settings[key] = settings_for(self.config, topic, window)
        return self._settings[key]

    def observe(self, bucket: Bucket) -> list[AlertEvent]:
        """Read one closed window; the alert events it opens or closes (none, one or two)."""
        settings = self.settings(bucket.topic, bucket.window)
        if not settings.enabled:
            return []
        key = (bucket.topic, bucket.window)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = Series()
        if series.last_end is not None and bucket.start < datetime.fromisoformat(series.last_end):
            raise ValueError(
                f"window {bucket.start.isoformat()} of {bucket.topic}/{bucket.window} comes before the end of the "
                f"last one read ({series.last_end}): windows must be fed once each, in time order"
            )
        warmed_up = series.windows_with_items >= self.config.warmup_windows
        events = []

        share_fires, share_values = self._share_test(series, bucket, settings, warmed_up)
        events += self._step(series.share_alert, NEGATIVE_SHARE_SURGE, share_fires, bucket, share_values)
        # A window that fires does not teach the baseline: a surge must not become the normal it is measured by.
        if not share_fires:
            series.negatives_sum = self.decay * series.negatives_sum + bucket.negatives
            series.count_sum = self.decay * series.count_sum + bucket.count

        if settings.volume_z is not None:
            volume_fires, volume_values = self._volume_test(series, bucket, settings, warmed_up)
            events += self._step(series.volume_alert, VOLUME_SPIKE, volume_fires, bucket, volume_values)
            if not volume_fires:
                series.volume_sum = self.decay * series.volume_sum + bucket.count
                series.volume_weight = self.decay * series.volume_weight + 1.0

        series.last_end = bucket.end.isoformat()
        series.windows_with_items += bucket.count > 0
        return events

    def _share_test(self, series: Series, bucket: Bucket, settings: Settings, warmed_up: bool) -> tuple[bool, dict]:
        if not warmed_up or series.count_sum <= 0 or bucket.count == 0 or bucket.count < settings.min_count:
            return False, {}
        baseline = min(max(series.negatives_sum / series.count_sum, BASELINE_FLOOR), 1 - BASELINE_FLOOR)
        share = bucket.negative_share
        z = (bucket.negatives - bucket.count * baseline) / math.sqrt(bucket.count * baseline * (1 - baseline))
        values = {
            "negative_share": share,
            "baseline": baseline,
            "z": z,
            "count": int(bucket.count),
            "negatives": int(bucket.negatives),
            "ratio": share / baseline,
        }
        if self.config.test == "binomial":
            # P(X >= negatives) for X ~ Binomial(count, baseline): sf(k) is P(X > k), hence k - 1.
            values["p_value"] = float(binom.sf(bucket.negatives - 1, bucket.count, baseline))
            significant = values["p_value"] < settings.alpha
        else:
            significant = z > settings.z
        return significant and share >= settings.min_ratio * baseline, values

    def _volume_test(self, series: Series, bucket: Bucket, settings: Settings, warmed_up: bool) -> tuple[bool, dict]:
        if not warmed_up or series.volume_weight <= 0 or bucket.count < settings.min_count:
            return False, {}
        rate = series.volume_sum / series.volume_weight
        # Poisson: the variance is the rate; at least 1 so a quiet topic's first few items are not a spike.
        z = (bucket.count - rate) / math.sqrt(max(rate, 1.0))
        return z > settings.volume_z, {"count": int(bucket.count), "expected_count": rate, "z": z}

    def _step(self, alert: Hysteresis, alertname: str, fires: bool, bucket: Bucket, values: dict) -> list[AlertEvent]:
        status = alert.step(fires, bucket, values, self.config.resolve_windows, self.config.cooldown_windows)
        if status is None:
            return []
        return [
            AlertEvent(
                status=status,
                alertname=alertname,
                topic=bucket.topic,
                window=bucket.window,
                severity=self.severity,
                starts_at=datetime.fromisoformat(alert.starts_at),
                ends_at=datetime.fromisoformat(alert.last_fired_end) if status == RESOLVED else None,
                values=dict(alert.last_values or {}),
            )
        ]
