"""The support bot's conversations, turns, handoffs and feedback, kept in SQLite (default) or PostgreSQL (by URL).

On the applications' database layer (lmadapt.apps.database): the same SQLAlchemy Core statements and tests cover
both. Every write is one transaction committed before the method returns: an acknowledged write survives a kill -9
of the service.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    select,
    update,
)
from sqlalchemy.engine import Connection

from lmadapt.apps.database import Database, meta_table
from lmadapt.errors import LmadaptError, did_you_mean

SCHEMA_VERSION = 1
REPLY_KEYS = ("answer", "intent", "confidence", "sources", "escalate", "reason", "latency_ms")
RATINGS = ("up", "down")

metadata = MetaData()

meta_table(metadata)

conversations = Table(
    "conversations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("status", String(16), nullable=False),  # bot | handed_off | resolved
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("agent", String(255)),
    Column("handed_off_at", DateTime(timezone=True)),  # kept after resolving: marks a person's label
    Column("resolved_at", DateTime(timezone=True)),
    Column("resolved_intent", String(255)),
)

turns = Table(
    "turns",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("conversation_id", String(32), ForeignKey("conversations.id"), nullable=False, index=True),
    Column("user_text", Text, nullable=False),
    Column("answer", Text),
    Column("intent", String(255)),
    Column("confidence", Float),
    Column("sources", JSON, nullable=False),
    Column("escalate", Boolean, nullable=False),
    Column("reason", Text),
    Column("latency_ms", Float),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

messages = Table(  # what people add to a conversation: agents' replies and handoff notes
    "messages",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("conversation_id", String(32), ForeignKey("conversations.id"), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # agent | note
    Column("author", String(255)),
    Column("text", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("conversation_id", String(32), ForeignKey("conversations.id"), nullable=False, index=True),
    Column("turn_id", Integer, ForeignKey("turns.id")),
    Column("rating", String(8)),
    Column("corrected_intent", String(255)),
    Column("comment", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


def new_conversation_id() -> str:
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC: SQLite hands back naive datetimes (stored in UTC), PostgreSQL ones in its session zone."""
    if value is None:
        return None
    value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    return value.isoformat()


class UnknownConversation(LmadaptError):
    """No conversation has the id given (the service answers 404)."""


class ConversationStore:
    """Conversations of the support bot, with people's handoffs, replies, resolutions and feedback.

    Safe to share between threads; several stores (and processes) may open the same database.
    """

    def __init__(self, url: str):
        self._db = Database(url, metadata, SCHEMA_VERSION)
        self._where = self._db.where

    def _conversation_row(self, conn: Connection, conversation_id: str):
        row = conn.execute(select(conversations).where(conversations.c.id == str(conversation_id))).first()
        if row is None:
            raise UnknownConversation(
                f"no conversation '{conversation_id}'",
                where=self._where,
                fix="start one first (start_conversation), or check the id",
            )
        return row

    def start_conversation(self) -> str:
        conversation_id = new_conversation_id()
        with self._db.writing() as conn:
            self._insert_conversation(conn, conversation_id)
        return conversation_id

    @staticmethod
    def _insert_conversation(conn: Connection, conversation_id: str) -> None:
        conn.execute(conversations.insert().values(id=conversation_id, status="bot", created_at=_now()))

    def add_turn(
        self, conversation_id: str, user_text: str, reply: dict, *, start: bool = False, hand_off: str | None = None
    ) -> int:
        """The customer's message and the bot's reply, stored together; returns the turn id. In the same transaction,
        `start` creates the conversation (an id from new_conversation_id()) and `hand_off` (a note: why) passes it to a
        person."""
        if not isinstance(user_text, str) or not user_text.strip():
            raise LmadaptError("a turn needs the customer's text (a non-empty string)", where=self._where)
        unknown = sorted(set(reply) - set(REPLY_KEYS))
        if unknown:
            raise LmadaptError(
                f"unknown reply field '{unknown[0]}'", where=self._where, fix=did_you_mean(unknown[0], REPLY_KEYS)
            )
        with self._db.writing() as conn:
            if start:
                self._insert_conversation(conn, conversation_id)
            row = self._conversation_row(conn, conversation_id)
            result = conn.execute(
                turns.insert().values(
                    conversation_id=str(conversation_id),
                    user_text=user_text,
                    answer=reply.get("answer"),
                    intent=reply.get("intent"),
                    confidence=reply.get("confidence"),
                    sources=list(reply.get("sources") or []),
                    escalate=bool(reply.get("escalate", False)),
                    reason=reply.get("reason"),
                    latency_ms=reply.get("latency_ms"),
                    created_at=_now(),
                )
            )
            if hand_off is not None:
                self._hand_off(conn, row, None, hand_off)
        return result.inserted_primary_key[0]

    def conversation(self, conversation_id: str) -> dict:
        """The conversation with its turns and people's messages, oldest first; times in UTC (ISO 8601)."""
        with self._db.reading() as conn:
            row = self._conversation_row(conn, conversation_id)
            turn_rows = conn.execute(
                select(turns).where(turns.c.conversation_id == row.id).order_by(turns.c.id)
            ).mappings()
            message_rows = conn.execute(
                select(messages).where(messages.c.conversation_id == row.id).order_by(messages.c.id)
            ).mappings()
            return {
                "id": row.id,
                "status": row.status,
                "created_at": _iso(row.created_at),
                "agent": row.agent,
                "handed_off_at": _iso(row.handed_off_at),
                "resolved_at": _iso(row.resolved_at),
                "resolved_intent": row.resolved_intent,
                "turns": [
                    {**{k: v for k, v in turn.items() if k != "conversation_id"}, "created_at": _iso(turn.created_at)}
                    for turn in turn_rows
                ],
                "messages": [
                    {
                        "id": message.id,
                        "kind": message.kind,
                        "author": message.author,
                        "text": message.text,
                        "created_at": _iso(message.created_at),
                    }
                    for message in message_rows
                ],
            }

    def hand_off(self, conversation_id: str, agent: str | None = None, note: str | None = None) -> dict:
        """Pass the conversation to a person. Again on a handed-off one only adds the agent or note given."""
        with self._db.writing() as conn:
            self._hand_off(conn, self._conversation_row(conn, conversation_id), agent, note)
        return self.conversation(conversation_id)

    def _hand_off(self, conn: Connection, row, agent: str | None, note: str | None) -> None:
        if row.status == "resolved":
            raise LmadaptError(
                f"conversation '{row.id}' is already resolved", where=self._where, fix="start a new conversation"
            )
        changes = {"status": "handed_off"}
        if row.handed_off_at is None:
            changes["handed_off_at"] = _now()
        if agent is not None:
            changes["agent"] = agent
        conn.execute(update(conversations).where(conversations.c.id == row.id).values(**changes))
        if note:
            conn.execute(
                messages.insert().values(
                    conversation_id=row.id, kind="note", author=agent or row.agent, text=note, created_at=_now()
                )
            )

    def add_agent_message(self, conversation_id: str, text: str) -> int:
        """A person's reply in a handed-off conversation; returns the message id."""
        if not isinstance(text, str) or not text.strip():
            raise LmadaptError("an agent's message needs text (a non-empty string)", where=self._where)
        with self._db.writing() as conn:
            row = self._conversation_row(conn, conversation_id)
            if row.status != "handed_off":
                raise LmadaptError(
                    f"conversation '{row.id}' is {row.status}, not handed off: a person replies only after a handoff",
                    where=self._where,
                    fix="hand_off the conversation first",
                )
            result = conn.execute(
                messages.insert().values(
                    conversation_id=row.id, kind="agent", author=row.agent, text=text, created_at=_now()
                )
            )
        return result.inserted_primary_key[0]

    def resolve(self, conversation_id: str, intent: str | None) -> dict:
        """A person closes the conversation, naming the customer's intent (a training label if it was handed off)."""
        with self._db.writing() as conn:
            row = self._conversation_row(conn, conversation_id)
            conn.execute(
                update(conversations)
                .where(conversations.c.id == row.id)
                .values(status="resolved", resolved_intent=intent, resolved_at=_now())
            )
        return self.conversation(conversation_id)

    def state(self, conversation_id: str, window: int, min_confidence: float | None = None) -> dict:
        """What the bot needs to know before it replies, in one read: the conversation's `status` (bot, handed_off,
        resolved) and `recent_failures`, how many of its last `window` turns the bot failed: escalated, gave no
        answer, or (with `min_confidence`) answered with a confidence below it."""
        with self._db.reading() as conn:
            row = self._conversation_row(conn, conversation_id)
            rows = conn.execute(
                select(turns.c.escalate, turns.c.answer, turns.c.confidence)
                .where(turns.c.conversation_id == row.id)
                .order_by(turns.c.id.desc())
                .limit(window)
            ).all()
        low = (lambda c: c is not None and c < min_confidence) if min_confidence is not None else (lambda c: False)
        failures = sum(1 for turn in rows if turn.escalate or turn.answer is None or low(turn.confidence))
        return {"status": row.status, "recent_failures": failures}

    def add_feedback(
        self,
        conversation_id: str,
        turn_id: int | None = None,
        rating: str | None = None,
        corrected_intent: str | None = None,
        comment: str | None = None,
    ) -> int:
        """A customer's or agent's verdict on the conversation or one turn of it; returns the feedback id."""
        if rating is not None and rating not in RATINGS:
            raise LmadaptError(f"rating '{rating}' is not one of: up, down", where=self._where, fix="give up or down")
        if rating is None and corrected_intent is None and not comment:
            raise LmadaptError("feedback needs a rating, a corrected intent or a comment", where=self._where)
        if corrected_intent is not None and turn_id is None:
            raise LmadaptError(
                "a corrected intent needs the turn it corrects", where=self._where, fix="give turn_id as well"
            )
        with self._db.writing() as conn:
            row = self._conversation_row(conn, conversation_id)
            if turn_id is not None:
                owner = conn.execute(select(turns.c.conversation_id).where(turns.c.id == turn_id)).scalar()
                if owner != row.id:
                    raise LmadaptError(
                        f"turn {turn_id} is not in conversation '{row.id}'",
                        where=self._where,
                        fix="give a turn id that add_turn returned for this conversation",
                    )
            result = conn.execute(
                feedback.insert().values(
                    conversation_id=row.id,
                    turn_id=turn_id,
                    rating=rating,
                    corrected_intent=corrected_intent,
                    comment=comment,
                    created_at=_now(),
                )
            )
        return result.inserted_primary_key[0]

    def training_rows(self) -> list[dict]:
        """Labelled texts people gave: {text, intent, source, id}, one per turn.

        A corrected intent labels its turn's text (the latest correction wins); a resolved, handed-off
        conversation's intent labels each of its turns that no correction labels.
        """
        with self._db.reading() as conn:
            corrections = conn.execute(
                select(feedback.c.id, feedback.c.turn_id, feedback.c.corrected_intent, turns.c.user_text)
                .join(turns, feedback.c.turn_id == turns.c.id)
                .where(feedback.c.corrected_intent.is_not(None))
                .order_by(feedback.c.id)
            ).all()
            resolved = conn.execute(
                select(turns.c.id, turns.c.user_text, conversations.c.resolved_intent)
                .join(conversations, turns.c.conversation_id == conversations.c.id)
                .where(
                    conversations.c.status == "resolved",
                    conversations.c.handed_off_at.is_not(None),
                    conversations.c.resolved_intent.is_not(None),
                )
                .order_by(turns.c.id)
            ).all()
        latest = {row.turn_id: row for row in corrections}  # in feedback order: the latest correction wins
        from_feedback = [
            {"text": row.user_text, "intent": row.corrected_intent, "source": "feedback", "id": f"feedback-{row.id}"}
            for row in sorted(latest.values(), key=lambda row: row.id)
        ]
        from_handoffs = [
            {"text": row.user_text, "intent": row.resolved_intent, "source": "handoff", "id": f"handoff-{row.id}"}
            for row in resolved
            if row.id not in latest
        ]
        return from_feedback + from_handoffs

    def counts(self) -> dict:
        """conversations, turns, feedback, handed_off (ever passed to a person) and resolved."""
        with self._db.reading() as conn:

            def count(table: Table, *where) -> int:
                return conn.execute(select(func.count()).select_from(table).where(*where)).scalar()

            return {
                "conversations": count(conversations),
                "turns": count(turns),
                "feedback": count(feedback),
                "handed_off": count(conversations, conversations.c.handed_off_at.is_not(None)),
                "resolved": count(conversations, conversations.c.status == "resolved"),
            }

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ConversationStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
