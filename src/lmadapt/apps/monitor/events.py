"""What flows between the monitor's parts: the closed windows the detectors read, and the alert events they raise."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

FIRING, RESOLVED = "firing", "resolved"
NEGATIVE_SHARE_SURGE, VOLUME_SPIKE = "NegativeShareSurge", "VolumeSpike"


@dataclass(frozen=True)
class Bucket:
    """One closed window of one topic: its items, how many of them are negative, and the sum of their negative
    scores (the mean score is score_sum / count). Times are UTC."""

    topic: str
    window: str  # the window's name as configured, e.g. "1h"
    start: datetime
    end: datetime
    count: int
    negatives: int
    score_sum: float = 0.0

    @property
    def negative_share(self) -> float:
        return self.negatives / self.count if self.count else 0.0


@dataclass
class AlertEvent:
    """A detector's decision on one event: it starts (firing) or ends (resolved). The resolved event carries its
    firing event's starts_at, so both have one fingerprint."""

    status: str  # FIRING or RESOLVED
    alertname: str  # NEGATIVE_SHARE_SURGE or VOLUME_SPIKE
    topic: str
    window: str
    severity: str
    starts_at: datetime  # the start of the window that fired
    ends_at: datetime | None = None  # the end of the last window of the event (resolved only)
    values: dict = field(default_factory=dict)  # negative_share, baseline, z, p_value, count, expected_count, ...

    @property
    def fingerprint(self) -> str:
        """One event's identity (Alertmanager's deduplication key): its labels and when it started."""
        key = "|".join([self.alertname, self.topic, self.window, self.starts_at.isoformat()])
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]

    @property
    def labels(self) -> dict[str, str]:
        return {"alertname": self.alertname, "topic": self.topic, "severity": self.severity, "window": self.window}
