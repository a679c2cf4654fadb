"""The monitor's history: labelled items, rejected ones with their reason, per-window aggregates kept up to date as
items arrive, the detectors' state, alerts and every delivery attempt, and where each input stopped.

SQLite (WAL, synchronous=FULL) by default, PostgreSQL by URL, on the applications' database layer
(lmadapt.apps.database): the same SQLAlchemy Core statements on both. Items, their aggregates and the input's position are written in one
transaction, so after a crash the input resumes where the last committed batch ended: no item lost, none labelled
twice (and a content hash refuses an item already stored).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    exists,
    func,
    or_,
    select,
)
from sqlalchemy.engine import Connection

from lmadapt.apps.database import Database, meta_table
from lmadapt.apps.monitor.events import FIRING, RESOLVED, AlertEvent

SCHEMA_VERSION = 1
RAW_CHARS = 2_000  # of a rejected item's raw text kept with its reason

metadata = MetaData()

meta_table(metadata)

items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("content_hash", String(64), nullable=False, unique=True),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("text", Text, nullable=False),
    Column("topic", String(255), nullable=False),
    Column("sentiment", String(255), nullable=False),
    Column("negative", Boolean, nullable=False),
    Column("negative_score", Float, nullable=False),  # the probability of the negative sentiment labels
    Column("labels", JSON, nullable=False),  # {labeller: label}
    Column("scores", JSON, nullable=False),  # {labeller: {label: probability}}
    Column("models", JSON, nullable=False),  # {labeller: run@manifest-hash}
    Column("fields", JSON, nullable=False),  # the item's own id and kept fields
    Column("source", String(255), nullable=False),
    Column("ingested_at", DateTime(timezone=True), nullable=False),
    Index("items_topic_time", "topic", "time"),
    Index("items_time", "time"),
)

rejects = Table(
    "rejects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(255), nullable=False),
    Column("position", String(64)),
    Column("reason", Text, nullable=False),
    Column("raw", Text),
    Column("at", DateTime(timezone=True), nullable=False),
)

aggregates = Table(  # per window, topic and sentiment label: kept up to date as items arrive
    "aggregates",
    metadata,
    Column("window", String(16), primary_key=True),
    Column("start", DateTime(timezone=True), primary_key=True),
    Column("topic", String(255), primary_key=True),
    Column("label", String(255), primary_key=True),
    Column("count", Integer, nullable=False),
    Column("score_sum", Float, nullable=False),  # of the items' negative scores
)

offsets = Table(
    "offsets",
    metadata,
    Column("source", String(255), primary_key=True),
    Column("position", String(64), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

state = Table("state", metadata, Column("key", String(64), primary_key=True), Column("value", JSON, nullable=False))

alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("fingerprint", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("alertname", String(64), nullable=False),
    Column("topic", String(255), nullable=False),
    Column("window", String(16), nullable=False),
    Column("severity", String(32), nullable=False),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True)),
    Column("values", JSON, nullable=False),
    Column("examples", JSON, nullable=False),
    Column("body", JSON, nullable=False),  # what the receivers are sent
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("fingerprint", "status"),
    Index("alerts_starts_at", "starts_at"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", Integer, ForeignKey("alerts.id"), nullable=False, index=True),
    Column("receiver", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("error", Text),
    Column("at", DateTime(timezone=True), nullable=False),
)


def utc(value: datetime) -> datetime:
    """A stored time in UTC: SQLite hands back naive datetimes (stored in UTC), PostgreSQL ones in its zone."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


@dataclass
class Item:
    """A labelled item, ready to store."""

    content_hash: str
    time: datetime
    text: str
    topic: str
    sentiment: str
    negative: bool
    negative_score: float
    labels: dict
    scores: dict
    models: dict
    fields: dict


@dataclass
class Reject:
    position: str | None
    reason: str
    raw: str | None


class MonitorStore:
    """The monitor's database; safe to share between threads."""

    def __init__(self, url: str):
        self.database = Database(url, metadata, SCHEMA_VERSION, version_key="monitor_schema_version")

    @property
    def where(self) -> str:
        return self.database.where

    def close(self) -> None:
        self.database.close()

    def __enter__(self) -> MonitorStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- ingest --------------------------------------------------------------------------------------------------

    def known_hashes(self, hashes: Sequence[str]) -> set[str]:
        """Those of `hashes` already stored."""
        with self.database.reading() as conn:
            return _known(conn, list(hashes))

    def add(
        self,
        new_items: Sequence[Item],
        new_rejects: Sequence[Reject],
        source: str,
        position: str | None,
        windows: dict,
        bucket_of,
    ) -> int:
        """Store items (one already stored by content hash is skipped), rejects, the aggregates of each window
        (`bucket_of(time, length)`: the start of the window holding `time`) and the input's position, in one
        transaction; returns how many items were new."""
        now = datetime.now(timezone.utc)
        with self.database.writing() as conn:
            known = _known(conn, [item.content_hash for item in new_items])
            fresh = [item for item in new_items if item.content_hash not in known]
            if fresh:
                conn.execute(items.insert(), [_item_row(item, source, now) for item in fresh])
                self._aggregate(conn, fresh, windows, bucket_of)
            if new_rejects:
                conn.execute(
                    rejects.insert(),
                    [
                        {
                            "source": source,
                            "position": reject.position,
                            "reason": reject.reason,
                            "raw": None if reject.raw is None else reject.raw[:RAW_CHARS],
                            "at": now,
                        }
                        for reject in new_rejects
                    ],
                )
            if position is not None:
                row = {"source": source, "position": position, "updated_at": now}
                self.database.upsert(conn, offsets, ["source"], [row])
        return len(fresh)

    def _aggregate(self, conn: Connection, fresh: Iterable[Item], windows: dict, bucket_of) -> None:
        """Add the items to their windows' aggregates (one upsert per window, topic and label touched)."""
        sums: dict[tuple, list] = {}
        for item in fresh:
            for window, length in windows.items():
                key = (window, bucket_of(item.time, length), item.topic, item.sentiment)
                total = sums.setdefault(key, [0, 0.0])
                total[0] += 1
                total[1] += item.negative_score
        rows = [
            {"window": w, "start": start, "topic": topic, "label": label, "count": count, "score_sum": score_sum}
            for (w, start, topic, label), (count, score_sum) in sums.items()
        ]
        self.database.upsert(conn, aggregates, ["window", "start", "topic", "label"], rows, add=["count", "score_sum"])

    def position(self, source: str) -> str | None:
        """Where the input `source` stopped (None: never read)."""
        with self.database.reading() as conn:
            return conn.execute(select(offsets.c.position).where(offsets.c.source == source)).scalar()

    # -- detection -----------------------------------------------------------------------------------------------

    def load_state(self, key: str) -> dict | None:
        with self.database.reading() as conn:
            return conn.execute(select(state.c.value).where(state.c.key == key)).scalar()

    def window_counts(self, window: str, start: datetime, end: datetime, negative_labels: Sequence[str]) -> list[dict]:
        """Per window start (from `start`, before `end`) and topic: count, negatives and the negative score sum."""
        negative = func.sum(aggregates.c.count).filter(aggregates.c.label.in_(list(negative_labels)))
        query = (
            select(
                aggregates.c.start,
                aggregates.c.topic,
                func.sum(aggregates.c.count).label("count"),
                func.coalesce(negative, 0).label("negatives"),
                func.sum(aggregates.c.score_sum).label("score_sum"),
            )
            .where(aggregates.c.window == window, aggregates.c.start >= start, aggregates.c.start < end)
            .group_by(aggregates.c.start, aggregates.c.topic)
            .order_by(aggregates.c.start, aggregates.c.topic)
        )
        with self.database.reading() as conn:
            return [
                {
                    "start": utc(row.start),
                    "topic": row.topic,
                    "count": int(row.count),
                    "negatives": int(row.negatives),
                    "score_sum": float(row.score_sum),
                }
                for row in conn.execute(query)
            ]

    def first_window(self, window: str) -> datetime | None:
        """The start of the earliest window of this length holding an item."""
        with self.database.reading() as conn:
            found = conn.execute(select(func.min(aggregates.c.start)).where(aggregates.c.window == window)).scalar()
        return None if found is None else utc(found)

    def topics_before(self, window: str, start: datetime) -> list[str]:
        """The topics with items in windows (of this length) before `start`."""
        query = (
            select(aggregates.c.topic)
            .where(aggregates.c.window == window, aggregates.c.start < start)
            .distinct()
            .order_by(aggregates.c.topic)
        )
        with self.database.reading() as conn:
            return list(conn.execute(query).scalars())

    def save_detection(self, key: str, value: dict, new_alerts: Sequence[dict]) -> list[int]:
        """The detectors' state and the alerts they raised, in one transaction; returns the new alerts' ids (an
        alert already stored, by fingerprint and status, is not stored twice: its id is None)."""
        now = datetime.now(timezone.utc)
        ids = []
        with self.database.writing() as conn:
            self.database.upsert(conn, state, ["key"], [{"key": key, "value": value}])
            for alert in new_alerts:
                exists = conn.execute(
                    select(alerts.c.id).where(
                        alerts.c.fingerprint == alert["fingerprint"], alerts.c.status == alert["status"]
                    )
                ).scalar()
                if exists is not None:
                    ids.append(None)
                    continue
                ids.append(conn.execute(alerts.insert().values(**alert, created_at=now)).inserted_primary_key[0])
        return ids

    def examples(self, topic: str, start: datetime, end: datetime, limit: int) -> list[str]:
        """The most negative items' texts of a topic in a time range (an alert's examples)."""
        query = (
            select(items.c.text)
            .where(items.c.topic == topic, items.c.time >= start, items.c.time < end, items.c.negative)
            .order_by(items.c.negative_score.desc(), items.c.id)
            .limit(limit)
        )
        with self.database.reading() as conn:
            return list(conn.execute(query).scalars())

    def record_delivery(self, attempt: dict) -> None:
        """One delivery attempt of an alert: {alert_id, receiver, attempt, ok, error, at}."""
        with self.database.writing() as conn:
            conn.execute(
                deliveries.insert().values(
                    alert_id=attempt["alert_id"],
                    receiver=attempt["receiver"],
                    attempt=attempt["attempt"],
                    ok=attempt["ok"],
                    error=attempt.get("error"),
                    at=datetime.fromisoformat(attempt["at"]) if attempt.get("at") else datetime.now(timezone.utc),
                )
            )

    def undelivered(self) -> list[tuple[int, dict]]:
        """Alerts no receiver attempt has delivered yet (a restart sends them): (id, body)."""
        delivered = select(deliveries.c.alert_id).where(deliveries.c.ok)
        query = select(alerts.c.id, alerts.c.body).where(alerts.c.id.not_in(delivered)).order_by(alerts.c.id)
        with self.database.reading() as conn:
            return [(row.id, row.body) for row in conn.execute(query)]

    def firing_events(self) -> list[AlertEvent]:
        """Every alert that fired, in the order raised."""
        query = select(alerts).where(alerts.c.status == FIRING).order_by(alerts.c.id)
        with self.database.reading() as conn:
            return [
                AlertEvent(
                    status=row.status,
                    alertname=row.alertname,
                    topic=row.topic,
                    window=row.window,
                    severity=row.severity,
                    starts_at=utc(row.starts_at),
                    ends_at=None if row.ends_at is None else utc(row.ends_at),
                    values=row.values,
                )
                for row in conn.execute(query)
            ]

    def time_range(self) -> tuple[datetime, datetime] | None:
        """The first and last item times stored (None: no items)."""
        with self.database.reading() as conn:
            first, last = conn.execute(select(func.min(items.c.time), func.max(items.c.time))).one()
        return None if first is None else (utc(first), utc(last))

    def counts(self) -> dict:
        with self.database.reading() as conn:

            def count(table: Table) -> int:
                return conn.execute(select(func.count()).select_from(table)).scalar()

            return {
                "items": count(items),
                "rejects": count(rejects),
                "alerts": count(alerts),
                "deliveries": count(deliveries),
            }

    # -- dashboard -----------------------------------------------------------------------------------------------
    # Read from the aggregates (one row per window, topic and label), never by scanning the items, except the latest
    # items, which walk the items_topic_time / items_time indexes newest first.

    def trend(
        self, window: str, topic: str | None, start: datetime, end: datetime, negative_labels: Sequence[str]
    ) -> list[dict]:
        """Per window start (from `start`, before `end`) holding items of `topic` (None: all topics summed): count,
        negatives, their share, and the mean negative score of the items."""
        negatives = func.coalesce(func.sum(aggregates.c.count).filter(aggregates.c.label.in_(list(negative_labels))), 0)
        query = (
            select(
                aggregates.c.start,
                func.sum(aggregates.c.count).label("count"),
                negatives.label("negatives"),
                func.sum(aggregates.c.score_sum).label("score_sum"),
            )
            .where(aggregates.c.window == window, aggregates.c.start >= start, aggregates.c.start < end)
            .group_by(aggregates.c.start)
            .order_by(aggregates.c.start)
        )
        if topic is not None:
            query = query.where(aggregates.c.topic == topic)
        with self.database.reading() as conn:
            return [_window_row(row) for row in conn.execute(query)]

    def topics(self, window: str | None = None) -> list[str]:
        """Every topic with items, sorted. `window`: read from that window's aggregates only, through the primary
        key (each item is counted in every window, so each window's rows name every topic): the longest window has
        the fewest rows; without it, every aggregate row is scanned."""
        query = select(aggregates.c.topic).distinct().order_by(aggregates.c.topic)
        if window is not None:
            query = query.where(aggregates.c.window == window)
        with self.database.reading() as conn:
            return list(conn.execute(query).scalars())

    def last_window(self, window: str) -> datetime | None:
        """The start of the latest window of this length holding an item."""
        with self.database.reading() as conn:
            found = conn.execute(select(func.max(aggregates.c.start)).where(aggregates.c.window == window)).scalar()
        return None if found is None else utc(found)

    def latest_items(
        self, limit: int, topic: str | None = None, label: str | None = None, before_id: int | None = None
    ) -> list[dict]:
        """The newest items (by time, then id), of `topic` and with the sentiment `label` where given; `before_id`:
        those after that item in this order (the next page)."""
        query = select(
            items.c.id,
            items.c.time,
            items.c.text,
            items.c.topic,
            items.c.sentiment,
            items.c.negative,
            items.c.negative_score,
            items.c.labels,
            items.c.scores,
            items.c.models,
            items.c.fields,
        )
        if topic is not None:
            query = query.where(items.c.topic == topic)
        if label is not None:
            query = query.where(items.c.sentiment == label)
        if before_id is not None:
            after = select(items.c.time).where(items.c.id == before_id).scalar_subquery()
            query = query.where(or_(items.c.time < after, and_(items.c.time == after, items.c.id < before_id)))
        query = query.order_by(items.c.time.desc(), items.c.id.desc()).limit(limit)
        with self.database.reading() as conn:
            return [{**row, "time": utc(row["time"])} for row in conn.execute(query).mappings()]

    def open_alerts(self) -> list[dict]:
        """Firing alerts whose event has not resolved (no resolved alert of the same fingerprint), oldest first."""
        resolved = alerts.alias("resolved")
        query = (
            select(alerts)
            .where(
                alerts.c.status == FIRING,
                ~exists().where(resolved.c.fingerprint == alerts.c.fingerprint, resolved.c.status == RESOLVED),
            )
            .order_by(alerts.c.starts_at, alerts.c.id)
        )
        with self.database.reading() as conn:
            return [_alert_row(row) for row in conn.execute(query).mappings()]

    def alerts(self, since: datetime | None = None, limit: int = 1_000) -> list[dict]:
        """Alerts (firing and resolved) of the events that started at or after `since` (None: all), the latest
        `limit` of them, oldest first."""
        query = select(alerts).order_by(alerts.c.starts_at.desc(), alerts.c.id.desc()).limit(limit)
        if since is not None:
            query = query.where(alerts.c.starts_at >= since)
        with self.database.reading() as conn:
            return [_alert_row(row) for row in reversed(conn.execute(query).mappings().all())]

    def change(self, window: str, length: timedelta, topic: str | None, negative_labels: Sequence[str]) -> dict | None:
        """The latest window of this length holding an item (the current period, which may still be open) against
        the one before it: each one's count, negatives and negative share, for `topic` (None: all topics summed);
        None when no item is stored."""
        current = self.last_window(window)
        if current is None:
            return None
        periods = {
            row["start"]: row for row in self.trend(window, topic, current - length, current + length, negative_labels)
        }
        empty = {"count": 0, "negatives": 0, "negative_share": None, "mean_negative_score": None}
        now = periods.get(current, {"start": current, **empty})
        before = periods.get(current - length, {"start": current - length, **empty})
        share_change = (
            None
            if now["negative_share"] is None or before["negative_share"] is None
            else now["negative_share"] - before["negative_share"]
        )
        return {
            "topic": topic,
            "current": now,
            "previous": before,
            "count_change": now["count"] - before["count"],
            "negative_share_change": share_change,
        }


def _window_row(row) -> dict:
    count, negatives = int(row.count), int(row.negatives)
    return {
        "start": utc(row.start),
        "count": count,
        "negatives": negatives,
        "negative_share": negatives / count if count else None,
        "mean_negative_score": float(row.score_sum) / count if count else None,
    }


def _alert_row(row) -> dict:
    return {
        "id": row["id"],
        "fingerprint": row["fingerprint"],
        "status": row["status"],
        "alertname": row["alertname"],
        "topic": row["topic"],
        "window": row["window"],
        "severity": row["severity"],
        "starts_at": utc(row["starts_at"]),
        "ends_at": None if row["ends_at"] is None else utc(row["ends_at"]),
        "values": row["values"],
        "examples": row["examples"],
    }


def _item_row(item: Item, source: str, now: datetime) -> dict:
    return {
        "content_hash": item.content_hash,
        "time": item.time,
        "text": item.text,
        "topic": item.topic,
        "sentiment": item.sentiment,
        "negative": item.negative,
        "negative_score": item.negative_score,
        "labels": item.labels,
        "scores": item.scores,
        "models": item.models,
        "fields": item.fields,
        "source": source,
        "ingested_at": now,
    }


def _known(conn: Connection, hashes: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(hashes), 500):  # bounded IN lists
        chunk = hashes[start : start + 500]
        found |= set(conn.execute(select(items.c.content_hash).where(items.c.content_hash.in_(chunk))).scalars())
    return found
