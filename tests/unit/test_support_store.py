"""The support store on SQLite and on a real PostgreSQL: round trips, reopening, concurrent writers, a kill -9 of
the writing process, and every bad input's message."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import pytest
import sqlalchemy as sa

from lmadapt.apps.support.store import ConversationStore, new_conversation_id
from lmadapt.errors import LmadaptError
from tests.conftest import REPO

CARD_REPLY = {
    "answer": "Your card is on its way.",
    "intent": "card_arrival",
    "confidence": 0.91,
    "sources": [{"id": 12, "score": 0.91}],
    "escalate": False,
    "reason": None,
    "latency_ms": 4.5,
}
UNSURE_REPLY = {"answer": None, "intent": "card_arrival", "confidence": 0.2, "escalate": True, "reason": "low"}


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/support.db"
    return request.getfixturevalue("postgresql_database")


@pytest.fixture
def store(store_url):
    with ConversationStore(store_url) as store:
        yield store


def test_a_conversation_round_trips_with_its_handoff_resolution_and_feedback(store):
    answered = store.start_conversation()
    card = store.add_turn(answered, "where is my new card?", CARD_REPLY)
    store.add_feedback(answered, card, rating="down", corrected_intent="card_delivery_estimate", comment="too vague")
    store.add_feedback(answered, card, corrected_intent="card_not_arrived")  # a second thought replaces the first
    store.add_feedback(answered, None, rating="up")

    unsure = store.start_conversation()
    first = store.add_turn(unsure, "my transfer is stuck", UNSURE_REPLY)
    second = store.add_turn(unsure, "it has been two days", UNSURE_REPLY)
    assert store.state(unsure, window=3) == {"status": "bot", "recent_failures": 2}
    assert store.state(unsure, window=1)["recent_failures"] == 1
    assert store.state(answered, window=3)["recent_failures"] == 0
    assert store.state(answered, window=3, min_confidence=0.95)["recent_failures"] == 1

    store.hand_off(unsure, agent="ana", note="two failed answers")
    again = store.hand_off(unsure)  # idempotent: same status, agent and handoff time
    assert store.state(unsure, window=3)["status"] == "handed_off"
    assert (again["status"], again["agent"]) == ("handed_off", "ana")
    message = store.add_agent_message(unsure, "I have found it: it arrives today.")
    resolved = store.resolve(unsure, "pending_transfer")

    assert resolved["status"] == "resolved"
    assert resolved["resolved_intent"] == "pending_transfer"
    assert resolved["handed_off_at"] == again["handed_off_at"] <= resolved["resolved_at"]
    assert [t["id"] for t in resolved["turns"]] == [first, second]
    assert resolved["turns"][0]["user_text"] == "my transfer is stuck"
    assert resolved["turns"][0]["answer"] is None
    assert resolved["turns"][0]["escalate"] is True
    assert resolved["turns"][0]["sources"] == []
    assert resolved["turns"][0]["created_at"].endswith("+00:00")
    assert [(m["kind"], m["author"], m["text"]) for m in resolved["messages"]] == [
        ("note", "ana", "two failed answers"),
        ("agent", "ana", "I have found it: it arrives today."),
    ]
    assert resolved["messages"][1]["id"] == message

    turn = store.conversation(answered)["turns"][0]
    assert {k: turn[k] for k in CARD_REPLY} == CARD_REPLY
    assert store.conversation(answered)["status"] == "bot"

    rows = store.training_rows()
    assert [(r["text"], r["intent"], r["source"]) for r in rows] == [
        ("where is my new card?", "card_not_arrived", "feedback"),
        ("my transfer is stuck", "pending_transfer", "handoff"),
        ("it has been two days", "pending_transfer", "handoff"),
    ]
    assert len({r["id"] for r in rows}) == 3
    assert store.counts() == {"conversations": 2, "turns": 3, "feedback": 3, "handed_off": 1, "resolved": 1}


def test_a_correction_overrides_the_handoff_label_of_its_turn_and_unhanded_resolutions_are_not_labels(store):
    handed = store.start_conversation()
    turn = store.add_turn(handed, "cancel my transfer", UNSURE_REPLY)
    store.hand_off(handed)
    store.resolve(handed, "cancel_transfer")
    store.add_feedback(handed, turn, corrected_intent="pending_transfer")
    closed_by_bot = store.start_conversation()
    store.add_turn(closed_by_bot, "thanks", CARD_REPLY)
    store.resolve(closed_by_bot, "thanks")
    assert [(r["text"], r["intent"], r["source"]) for r in store.training_rows()] == [
        ("cancel my transfer", "pending_transfer", "feedback")
    ]


def test_a_turn_starts_and_hands_off_its_conversation_in_one_transaction(store):
    started = new_conversation_id()
    turn = store.add_turn(started, "I want a person", UNSURE_REPLY, start=True, hand_off="user_asked_for_human")
    stored = store.conversation(started)
    assert [t["id"] for t in stored["turns"]] == [turn]
    assert stored["status"] == "handed_off"
    assert [(m["kind"], m["text"]) for m in stored["messages"]] == [("note", "user_asked_for_human")]
    # A turn whose handoff is refused is not stored either: the client gets the error, nothing half-written.
    store.resolve(started, None)
    with pytest.raises(LmadaptError, match="is already resolved"):
        store.add_turn(started, "hello again", UNSURE_REPLY, hand_off="repeated_failure")
    assert len(store.conversation(started)["turns"]) == 1
    with pytest.raises(sa.exc.IntegrityError):  # an id taken is not started twice
        store.add_turn(started, "hello", CARD_REPLY, start=True)


def test_everything_survives_reopening(store_url):
    with ConversationStore(store_url) as store:
        conversation_id = store.start_conversation()
        turn = store.add_turn(conversation_id, "lost my card", CARD_REPLY)
        store.hand_off(conversation_id, agent="bo", note="lost card")
        store.add_feedback(conversation_id, turn, corrected_intent="lost_or_stolen_card")
        before = store.conversation(conversation_id)
    with ConversationStore(store_url) as reopened:
        assert reopened.conversation(conversation_id) == before
        assert reopened.state(conversation_id, window=3)["status"] == "handed_off"
        assert reopened.training_rows() == [
            {"text": "lost my card", "intent": "lost_or_stolen_card", "source": "feedback", "id": "feedback-1"}
        ]


def _write_concurrently(stores: list[ConversationStore], threads: int = 8, turns: int = 25) -> dict[str, list[int]]:
    """`threads` threads, each adding `turns` turns to its own conversation through the stores in turn."""
    written: dict[str, list[int]] = {}
    errors = []
    start = threading.Barrier(threads)

    def write(index: int):
        try:
            store = stores[index % len(stores)]
            conversation_id = store.start_conversation()
            start.wait()
            written[conversation_id] = [
                stores[(index + n) % len(stores)].add_turn(conversation_id, f"question {n}", CARD_REPLY)
                for n in range(turns)
            ]
        except Exception as error:  # noqa: BLE001 - re-raised below, in the test's thread
            errors.append(error)

    workers = [threading.Thread(target=write, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors, errors
    return written


def test_concurrent_writers_lose_nothing(store):
    written = _write_concurrently([store])
    assert store.counts()["turns"] == 200
    assert len({turn for ids in written.values() for turn in ids}) == 200
    for conversation_id, ids in written.items():
        assert [t["id"] for t in store.conversation(conversation_id)["turns"]] == ids


def test_two_stores_on_one_sqlite_file_lose_nothing(tmp_path):
    url = f"sqlite:///{tmp_path}/support.db"
    with ConversationStore(url) as first, ConversationStore(url) as second:
        written = _write_concurrently([first, second])
        assert first.counts()["turns"] == second.counts()["turns"] == 200
    assert len({turn for ids in written.values() for turn in ids}) == 200


WRITER = """
import sys
from lmadapt.apps.support.store import ConversationStore, new_conversation_id

store = ConversationStore(sys.argv[1])
for n in range(100_000):  # bounded, should the test die before killing it
    print(store.add_turn(sys.argv[2], f"question {n}", {"answer": "yes", "intent": "card_arrival"}), flush=True)
"""


def test_every_acknowledged_turn_survives_a_kill_9(store_url):
    with ConversationStore(store_url) as store:
        conversation_id = store.start_conversation()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, store_url, conversation_id], stdout=subprocess.PIPE, text=True, env=env
    )
    acknowledged = []
    try:
        while len(acknowledged) < 40:
            line = writer.stdout.readline()
            assert line, "the writer stopped before acknowledging 40 turns"
            acknowledged.append(int(line))
        os.kill(writer.pid, signal.SIGKILL)
        acknowledged += [int(line) for line in writer.stdout.read().split()]  # printed before the kill landed
    finally:
        writer.kill()
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    with ConversationStore(store_url) as reopened:
        stored = {turn["id"] for turn in reopened.conversation(conversation_id)["turns"]}
    assert set(acknowledged) <= stored
    assert len(stored) - len(acknowledged) <= 1  # at most the one in flight when killed


def test_unknown_conversations_and_turns_are_refused(store):
    for call in (
        lambda: store.add_turn("nope", "hello", CARD_REPLY),
        lambda: store.conversation("nope"),
        lambda: store.hand_off("nope"),
        lambda: store.add_feedback("nope", None, rating="up"),
        lambda: store.state("nope", window=3),
    ):
        with pytest.raises(LmadaptError, match="no conversation 'nope'"):
            call()
    conversation_id = store.start_conversation()
    other = store.start_conversation()
    turn = store.add_turn(other, "hello", CARD_REPLY)
    with pytest.raises(LmadaptError, match=f"turn {turn} is not in conversation '{conversation_id}'"):
        store.add_feedback(conversation_id, turn, rating="up")
    assert store.counts()["turns"] == 1 and store.counts()["feedback"] == 0


def test_bad_turns_feedback_and_agent_messages_are_refused(store):
    conversation_id = store.start_conversation()
    with pytest.raises(LmadaptError, match="(?s)unknown reply field 'source'.*did you mean 'sources'"):
        store.add_turn(conversation_id, "hi", {"answer": "hello", "source": []})
    with pytest.raises(LmadaptError, match="a turn needs the customer's text"):
        store.add_turn(conversation_id, "  ", CARD_REPLY)
    with pytest.raises(LmadaptError, match="rating 'meh' is not one of: up, down"):
        store.add_feedback(conversation_id, None, rating="meh")
    with pytest.raises(LmadaptError, match="feedback needs a rating, a corrected intent or a comment"):
        store.add_feedback(conversation_id, None)
    with pytest.raises(LmadaptError, match="a corrected intent needs the turn it corrects"):
        store.add_feedback(conversation_id, None, corrected_intent="card_arrival")
    with pytest.raises(LmadaptError, match="is bot, not handed off: a person replies only after a handoff"):
        store.add_agent_message(conversation_id, "hello")
    store.resolve(conversation_id, None)
    with pytest.raises(LmadaptError, match="is already resolved"):
        store.hand_off(conversation_id)


def test_a_database_from_a_newer_version_is_refused(store_url):
    ConversationStore(store_url).close()
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE meta SET value = '2' WHERE key = 'schema_version'"))
    engine.dispose()
    with pytest.raises(LmadaptError, match=r"schema version 2, newer than this lmadapt reads \(1\)") as raised:
        ConversationStore(store_url)
    assert "upgrade lmadapt" in str(raised.value)


def test_an_unreachable_postgresql_server_is_reported_without_its_password():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(LmadaptError, match="cannot open the database") as raised:
        ConversationStore(f"postgresql://bot:s3cret@127.0.0.1:{port}/support")
    message = str(raised.value)
    assert f"postgresql+psycopg://bot:***@127.0.0.1:{port}/support" in message
    assert "s3cret" not in message and "server is running" in message


def test_a_sqlite_file_in_a_missing_folder_gets_its_folder(tmp_path):
    path = tmp_path / "not" / "yet" / "support.db"
    with ConversationStore(f"sqlite:///{path}") as store:
        store.start_conversation()
    assert path.is_file()
    with ConversationStore(f"sqlite:///{path}") as store:
        assert store.counts()["conversations"] == 1


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://bot@localhost/support", "unsupported database 'mysql'"),
        ("support.db", "'support.db' is not a database URL"),
        ("sqlite://", "an in-memory SQLite database would lose everything on restart"),
        ("sqlite:///:memory:", "an in-memory SQLite database would lose everything on restart"),
    ],
)
def test_urls_other_than_a_sqlite_file_or_postgresql_are_refused(url, message):
    with pytest.raises(LmadaptError, match=message) as raised:
        ConversationStore(url)
    assert "sqlite:///" in str(raised.value)


def test_sqlite_runs_durable_settings(tmp_path):
    with ConversationStore(f"sqlite:///{tmp_path}/support.db") as store:
        with store._db.engine.connect() as conn:
            settings = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
    assert settings == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "busy_timeout": 30_000}
