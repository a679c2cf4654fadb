"""The monitor's detectors on synthetic window sequences (seeded, or constant where a number must be exact), and the
scoring of alerts against labelled events on a small example worked out by hand."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from scipy.stats import binom

from lmadapt.apps.monitor.config import DetectionConfig
from lmadapt.apps.monitor.detect import Detectors, settings_for
from lmadapt.apps.monitor.evaluate import LabelledEvent, recall_by, score_alerts
from lmadapt.apps.monitor.events import FIRING, NEGATIVE_SHARE_SURGE, RESOLVED, VOLUME_SPIKE, AlertEvent, Bucket
from lmadapt.errors import LmadaptError

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


def config(**changes) -> DetectionConfig:
    return dataclasses.replace(DetectionConfig(), **changes)


def windows(counts, negatives, topic="earn", window="1h", length=HOUR, first=0) -> list[Bucket]:
    return [
        Bucket(topic, window, T0 + (first + i) * length, T0 + (first + i + 1) * length, int(count), int(negative))
        for i, (count, negative) in enumerate(zip(counts, negatives))
    ]


def steady(n, count=40, negatives=4, first=0, **kwargs) -> list[Bucket]:
    """n windows of a constant share (10% by default): a baseline known exactly."""
    return windows([count] * n, [negatives] * n, first=first, **kwargs)


def noisy(n, rng, rate=40, share=0.2, first=0, **kwargs) -> list[Bucket]:
    counts = rng.poisson(rate, n)
    return windows(counts, rng.binomial(counts, share), first=first, **kwargs)


def feed(detectors: Detectors, buckets: list[Bucket]) -> list[tuple[int, AlertEvent]]:
    """Every event raised, with the index of the window that raised it."""
    return [(i, event) for i, bucket in enumerate(buckets) for event in detectors.observe(bucket)]


def statuses(raised) -> list[tuple[int, str, str]]:
    return [(i, event.alertname, event.status) for i, event in raised]


# negative-share surge


def test_a_stationary_stream_raises_few_alerts_at_the_defaults():
    rng = np.random.default_rng(0)
    raised = []
    for stream in range(3):
        raised += feed(Detectors(config()), noisy(500, rng, topic=f"topic{stream}"))
    # 1500 windows of about 40 items, 20% negative. Share: alpha 0.001 and the 1.5x ratio together leave well under
    # one false alert per 1000 windows. Volume: a count 4 standard deviations up (67 of 40) comes once in a few
    # thousand windows; this seed has one.
    firing = [event.alertname for _, event in raised if event.status == FIRING]
    assert firing.count(NEGATIVE_SHARE_SURGE) == 0
    assert firing.count(VOLUME_SPIKE) <= 2


def test_a_3x_surge_fires_once_early_and_resolves_after_it_ends():
    rng = np.random.default_rng(1)
    counts = rng.poisson(40, 6)
    surge = windows(counts, np.round(0.3 * counts), first=100)  # 3x the 10% share, exactly
    buckets = noisy(100, rng, share=0.1) + surge + noisy(20, rng, share=0.1, first=106)
    raised = feed(Detectors(config()), buckets)
    assert statuses(raised) == [(raised[0][0], NEGATIVE_SHARE_SURGE, FIRING), (107, NEGATIVE_SHARE_SURGE, RESOLVED)]
    fired_at, firing = raised[0]
    assert 100 <= fired_at <= 101  # within the surge's first two windows
    resolved = raised[1][1]
    assert firing.starts_at == buckets[fired_at].start and resolved.starts_at == firing.starts_at
    assert resolved.fingerprint == firing.fingerprint
    assert resolved.ends_at == surge[-1].end  # resolve_windows=2: raised at the second quiet window, 107
    values = firing.values
    assert values["count"] == buckets[fired_at].count and values["negatives"] == buckets[fired_at].negatives
    assert values["ratio"] == pytest.approx(values["negative_share"] / values["baseline"])
    assert 0.07 < values["baseline"] < 0.13 and values["ratio"] > 1.5
    assert values["p_value"] == pytest.approx(binom.sf(values["negatives"] - 1, values["count"], values["baseline"]))
    assert values["p_value"] < 0.001


def test_a_significant_1_2x_bump_needs_the_ratio():
    # 5000 items a window at 10%, then 12%: z about 4.7, far past alpha, but 1.2x the baseline.
    buckets = steady(30, count=5000, negatives=500) + steady(1, count=5000, negatives=600, first=30)
    assert feed(Detectors(config(min_ratio=1.5)), buckets) == []
    assert statuses(feed(Detectors(config(min_ratio=1.1)), buckets)) == [(30, NEGATIVE_SHARE_SURGE, FIRING)]


def test_binomial_is_exact_on_small_counts_where_z_is_not():
    # Baseline 10%; 3 negatives of 5: z = 2.5 / sqrt(0.45) = 3.7, but P(X >= 3) = 0.0086 > alpha.
    buckets = steady(30, count=10, negatives=1) + steady(1, count=5, negatives=3, first=30)
    assert binom.sf(2, 5, 0.1) == pytest.approx(0.00856)
    assert feed(Detectors(config(test="binomial", min_count=5)), buckets) == []
    raised = feed(Detectors(config(test="z", min_count=5)), buckets)
    assert statuses(raised) == [(30, NEGATIVE_SHARE_SURGE, FIRING)]
    assert raised[0][1].values["z"] == pytest.approx(2.5 / np.sqrt(0.45))
    assert "p_value" not in raised[0][1].values


def test_windows_below_min_count_are_not_tested():
    nine_of_nine = steady(30) + steady(1, count=9, negatives=9, first=30)
    ten_of_ten = steady(30) + steady(1, count=10, negatives=10, first=30)
    assert feed(Detectors(config(min_count=10)), nine_of_nine) == []
    assert statuses(feed(Detectors(config(min_count=10)), ten_of_ten)) == [(30, NEGATIVE_SHARE_SURGE, FIRING)]


def test_no_test_before_the_warm_up_and_empty_windows_do_not_warm_up():
    surge = steady(1, negatives=20, first=12)
    assert feed(Detectors(config(warmup_windows=12)), steady(11) + steady(1, negatives=20, first=11)) == []
    assert statuses(feed(Detectors(config(warmup_windows=12)), steady(12) + surge)) == [
        (12, NEGATIVE_SHARE_SURGE, FIRING)
    ]
    gappy = windows([40, 0] * 6, [4, 0] * 6) + surge  # 12 windows behind, 6 with items
    assert feed(Detectors(config(warmup_windows=12)), gappy) == []


def test_hysteresis_keeps_one_event_and_cooldown_holds_a_refire():
    # After 30 steady windows: fire, a quiet window, fire (one event), two quiet (resolved), a fire inside the
    # cooldown (nothing), quiet to the cooldown's end, then a fire (a new event).
    pattern = "F.F..F...F"
    buckets = steady(30) + [steady(1, negatives=20 if c == "F" else 4, first=30 + i)[0] for i, c in enumerate(pattern)]
    raised = feed(Detectors(config(resolve_windows=2, cooldown_windows=4)), buckets)
    assert statuses(raised) == [
        (30, NEGATIVE_SHARE_SURGE, FIRING),
        (34, NEGATIVE_SHARE_SURGE, RESOLVED),
        (39, NEGATIVE_SHARE_SURGE, FIRING),
    ]
    assert raised[1][1].starts_at == buckets[30].start and raised[1][1].ends_at == buckets[32].end
    assert raised[2][1].starts_at == buckets[39].start
    # Without the cooldown, the fire at 35 opens an event.
    raised = feed(Detectors(config(resolve_windows=2, cooldown_windows=0)), buckets)
    assert [i for i, event in raised if event.status == FIRING] == [30, 35, 39]


def test_a_long_surge_does_not_teach_the_baseline():
    # 30 windows at 3x: were they averaged in (half-life 24), the baseline would reach about 22% and the 30% share
    # would stop firing (ratio 1.4) before the surge ends.
    buckets = steady(50) + steady(30, negatives=12, first=50) + steady(3, first=80)
    detectors = Detectors(config())
    raised = feed(detectors, buckets)
    assert statuses(raised) == [(50, NEGATIVE_SHARE_SURGE, FIRING), (81, NEGATIVE_SHARE_SURGE, RESOLVED)]
    assert raised[1][1].ends_at == buckets[79].end
    assert raised[1][1].values["baseline"] == pytest.approx(0.1)
    series = detectors.state()["series"][0]
    assert series["negatives_sum"] / series["count_sum"] == pytest.approx(0.1)


def test_rules_lower_alpha_for_one_topic_and_disable_another():
    # 9 negatives of 40 on a 10% baseline: P(X >= 9) is about 0.016, a fire at alpha 0.05 only.
    def surge(topic):
        return steady(30, topic=topic) + steady(1, negatives=9, first=30, topic=topic)

    rules = [{"topic": "earn", "alpha": 0.05}]
    detectors = Detectors(config(rules=rules))
    assert statuses(feed(detectors, surge("earn"))) == [(30, NEGATIVE_SHARE_SURGE, FIRING)]
    assert feed(detectors, surge("grain")) == []

    rules = [{"topic": "grain", "enabled": False}]
    detectors = Detectors(config(rules=rules))
    strong = steady(30, topic="grain") + steady(1, negatives=20, first=30, topic="grain")
    assert feed(detectors, strong) == []
    assert len(feed(detectors, [dataclasses.replace(b, topic="earn") for b in strong])) == 1
    assert all(topic != "grain" for topic, _ in detectors.series)


def test_the_most_specific_rule_wins():
    rules = [
        {"topic": "earn", "window": "1h", "alpha": 0.0001},
        {"topic": "earn", "alpha": 0.05, "min_count": 5},
        {"window": "1h", "alpha": 0.2, "volume_z": None},
    ]
    cfg = config(rules=rules)
    assert settings_for(cfg, "earn", "1h").alpha == 0.0001
    assert settings_for(cfg, "earn", "1h").min_count == 5  # the topic rule's key the window rule does not set
    assert settings_for(cfg, "earn", "1h").volume_z is None
    assert settings_for(cfg, "earn", "15min").alpha == 0.05
    assert settings_for(cfg, "grain", "1h").alpha == 0.2
    assert settings_for(cfg, "grain", "1d").alpha == cfg.alpha
    surge = steady(30) + steady(1, negatives=9, first=30)
    assert feed(Detectors(cfg), surge) == []
    assert len(feed(Detectors(cfg), [dataclasses.replace(b, window="15min") for b in surge])) == 1


def test_a_bad_rule_is_refused_with_where_it_is():
    with pytest.raises(LmadaptError, match=r"rules\[1\].*alpha must lie in"):
        Detectors(config(rules=[{"topic": "earn"}, {"topic": "grain", "alpha": 2}]))
    with pytest.raises(LmadaptError, match="did you mean 'min_count'"):
        Detectors(config(rules=[{"topic": "earn", "min_cnt": 5}]))


def test_the_state_round_trip_resumes_exactly():
    rng = np.random.default_rng(3)
    streams = []
    for topic in ("earn", "grain"):
        counts = np.concatenate([rng.poisson(40, 60), rng.poisson(200, 3), rng.poisson(40, 40)])
        shares = np.r_[[0.1] * 60, [0.1] * 3, [0.35] * 8, [0.1] * 32]
        streams += windows(counts, rng.binomial(counts, shares), topic=topic)
    buckets = sorted(streams, key=lambda b: (b.start, b.topic))  # the monitor's order: by time, then topic
    cfg = config(rules=[{"topic": "grain", "min_ratio": 2.0}])
    whole = Detectors(cfg)
    expected = [event for bucket in buckets for event in whole.observe(bucket)]
    assert {event.alertname for event in expected} == {NEGATIVE_SHARE_SURGE, VOLUME_SPIKE}

    split = 2 * 66  # inside the share surge, with its events open
    first = Detectors(cfg)
    events = [event for bucket in buckets[:split] for event in first.observe(bucket)]
    assert any(s.share_alert.active for s in first.series.values())
    resumed = Detectors(cfg, state=json.loads(json.dumps(first.state())))
    events += [event for bucket in buckets[split:] for event in resumed.observe(bucket)]
    assert events == expected
    assert resumed.state() == whole.state()


def test_a_window_fed_twice_is_refused():
    detectors = Detectors(config())
    buckets = steady(3)
    feed(detectors, buckets)
    with pytest.raises(ValueError, match="in time order"):
        detectors.observe(buckets[1])


# volume spike


def test_a_5x_count_burst_is_a_volume_spike_and_a_share_surge_is_not():
    rng = np.random.default_rng(4)
    burst = windows([100], [10], first=60)  # 5x the items, the usual 10% negative
    raised = feed(Detectors(config()), noisy(60, rng, rate=20, share=0.1) + burst + noisy(5, rng, 20, 0.1, first=61))
    assert statuses(raised) == [(60, VOLUME_SPIKE, FIRING), (62, VOLUME_SPIKE, RESOLVED)]
    values = raised[0][1].values
    assert values["count"] == 100 and 16 < values["expected_count"] < 24
    assert values["z"] == pytest.approx((100 - values["expected_count"]) / np.sqrt(values["expected_count"]))

    counts = rng.poisson(40, 80)
    share_surge = windows(counts, rng.binomial(counts, np.r_[[0.1] * 60, [0.3] * 6, [0.1] * 14]))
    alertnames = {event.alertname for _, event in feed(Detectors(config()), share_surge)}
    assert alertnames == {NEGATIVE_SHARE_SURGE}


def test_no_volume_detector_without_volume_z():
    burst = steady(40) + steady(1, count=400, negatives=40, first=40)
    assert statuses(feed(Detectors(config()), burst)) == [(40, VOLUME_SPIKE, FIRING)]
    assert feed(Detectors(config(volume_z=None)), burst) == []


# evaluate


def alert(topic, window, start, status=FIRING) -> AlertEvent:
    return AlertEvent(status, NEGATIVE_SHARE_SURGE, topic, window, "warning", start)


LENGTHS = {"1h": HOUR, "15min": timedelta(minutes=15)}
EVENTS = [
    LabelledEvent("earn", T0 + 10 * HOUR, T0 + 11 * HOUR, {"ratio": 3, "minutes": 60}),
    LabelledEvent("earn", T0 + 20 * HOUR, T0 + 21 * HOUR, {"ratio": 3, "minutes": 60}),
    LabelledEvent("grain", T0 + 29 * HOUR, T0 + 29.5 * HOUR, {"ratio": 2, "minutes": 30}),
]
ALERTS = [
    alert("earn", "1h", T0 + 10 * HOUR),  # raised 11:00, after the 15min alert below: a duplicate
    alert("earn", "15min", T0 + 10.5 * HOUR),  # raised 10:45: detects event 0 in 3 windows
    alert("earn", "1h", T0 + 21 * HOUR),  # the window just after event 1: detects it, (22:00 - 20:00) / 1h = 2
    alert("earn", "1h", T0 + 22 * HOUR),  # starts at event 1's end + one window: outside, a false alert
    alert("grain", "1h", T0 + 10 * HOUR),  # the wrong topic for event 0: a false alert
    alert("earn", "1h", T0 + 10 * HOUR, status=RESOLVED),  # not an alert raised: ignored
]


def test_score_alerts_by_hand():
    score = score_alerts(ALERTS, EVENTS, LENGTHS, T0, T0 + 48 * HOUR)
    assert (score["alerts"], score["true_alerts"], score["duplicate_alerts"], score["false_alerts"]) == (5, 2, 1, 2)
    assert score["precision"] == pytest.approx(2 / 4)
    assert score["recall"] == pytest.approx(2 / 3)
    assert score["f1"] == pytest.approx(4 / 7)
    assert score["delay_windows_mean"] == pytest.approx(2.5) and score["delay_windows_median"] == pytest.approx(2.5)
    assert score["false_alerts_per_day"] == pytest.approx(1.0)
    assert [row["detected"] for row in score["per_event"]] == [True, True, False]
    assert [row["delay_windows"] for row in score["per_event"]] == [3.0, 2.0, None]
    assert [row["window"] for row in score["per_event"]] == ["15min", "1h", None]
    assert [row["alerts"] for row in score["per_event"]] == [2, 1, 0]
    assert score["per_event"][0]["detected_at"] == (T0 + 10.75 * HOUR).isoformat()
    json.dumps(score)  # stored with the benchmark's rows

    assert score_alerts(ALERTS, EVENTS, LENGTHS, T0, T0 + 48 * HOUR, control_days=0.5)["false_alerts_per_day"] == 4.0


def test_score_alerts_without_alerts_or_with_an_unknown_window():
    score = score_alerts([], EVENTS, LENGTHS, T0, T0 + 24 * HOUR)
    assert (score["precision"], score["recall"], score["f1"], score["delay_windows_mean"]) == (0.0, 0.0, 0.0, None)
    with pytest.raises(LmadaptError, match="window '1d' has no length"):
        score_alerts([alert("earn", "1d", T0)], EVENTS, LENGTHS, T0, T0 + 24 * HOUR)
    with pytest.raises(LmadaptError, match="no later than it starts"):
        score_alerts([], EVENTS, LENGTHS, T0, T0)


def test_an_alert_over_two_events_detects_the_earlier_and_the_next_alert_the_later():
    events = [LabelledEvent("earn", T0, T0 + HOUR / 4), LabelledEvent("earn", T0 + HOUR / 2, T0 + HOUR)]
    score = score_alerts([alert("earn", "1h", T0), alert("earn", "1h", T0 + HOUR)], events, LENGTHS, T0, T0 + HOUR)
    assert [row["delay_windows"] for row in score["per_event"]] == [1.0, 1.5]
    assert (score["true_alerts"], score["duplicate_alerts"], score["false_alerts"]) == (2, 0, 0)


def test_recall_by_groups():
    score = score_alerts(ALERTS, EVENTS, LENGTHS, T0, T0 + 48 * HOUR)
    detected = [row["detected"] for row in score["per_event"]]
    groups = recall_by(EVENTS, detected, key=lambda e: (e.label["ratio"], e.end - e.start >= HOUR))
    assert groups == {
        (3, True): {"events": 2, "detected": 2, "recall": 1.0},
        (2, False): {"events": 1, "detected": 0, "recall": 0.0},
    }
    with pytest.raises(LmadaptError, match="2 detection flags for 3 events"):
        recall_by(EVENTS, detected[:2], key=lambda e: e.topic)
