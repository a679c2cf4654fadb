"""The support bot on a tiny model: the bot folder, the answering policy and its calibration, the service's routes
over a real store (SQLite, and PostgreSQL when a server can be started), evaluation, learning from the queue, and
the command line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient

from lmadapt.apps.support.bot import BOT_FILE, load_bot
from lmadapt.apps.support.config import PolicyConfig, load_support_config
from lmadapt.apps.support.evaluate import evaluate_bot, retrieval_metrics
from lmadapt.apps.support.knowledge import KnowledgeBase
from lmadapt.apps.support.policy import Reading, Signals, Thresholds, calibrate, decide, recall_threshold, sweep
from lmadapt.apps.support.scope import fit_scope_score
from lmadapt.apps.support.service import create_support_app
from lmadapt.apps.support.store import ConversationStore
from lmadapt.apps.support.update import update_bot
from lmadapt.errors import LmadaptError
from lmadapt.serving.settings import ServiceSettings
from tests.conftest import REPO, SUPPORT_ANSWERS, support_history, support_overrides

POSITIVE = "the film was great and moving"
OUT_OF_SCOPE = "q w e r t y"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def bot(tiny_bot):
    return load_bot(tiny_bot)


def test_the_bot_folder_holds_its_run_index_and_calibrated_thresholds(tiny_bot, bot):
    record = json.loads((tiny_bot / BOT_FILE).read_text())
    assert record["version"] == 1 and record["parent"] is None and record["index"]["kind"] == "numpy"
    # calibrated on held-out in-scope rows and the out-of-scope rows: the target is met on them
    found = record["calibration"]
    assert found["met"] and found["answered_accuracy"] >= 0.95 and found["oos_recall"] >= 0.9
    assert found["containment"] >= 0.8
    assert (tiny_bot / "intent" / "manifest.json").is_file() and (tiny_bot / "intent_data" / "train.jsonl").is_file()
    # the knowledge base: the in-scope training questions only, each with its history answer
    assert set(bot.knowledge.intents) == {"positive", "negative"}
    assert all(bot.knowledge.answer_of(i) == SUPPORT_ANSWERS[intent] for i, intent in enumerate(bot.knowledge.intents))
    assert record["index"]["rows"] == len(bot.knowledge)
    # it reads on the fastest path here (the intent run exported at build), calibrated on that path's readings, with
    # the out-of-scope score weighed on the calibration messages
    import lmadapt

    assert (tiny_bot / "intent" / "onnx" / "model.int8.onnx").is_file()
    assert record["backend"] == bot.backend == lmadapt.load(tiny_bot / "intent").inference("auto").engine.name
    assert set(record["scope_score"]) == {"shift", "weights", "intercept"} and bot.scope is not None


def test_the_bot_answers_from_templates_and_escalates_what_it_should_not_answer(bot):
    answered, outside, human = bot.answer([POSITIVE, OUT_OF_SCOPE, "I want to talk to a human please"])
    assert not answered.escalate and answered.intent == "positive" and answered.answer == "Template: glad!"
    assert answered.route == "template" and answered.sources[0]["intent"] == "positive"
    assert outside.escalate and outside.reason == "out_of_scope"
    assert human.escalate and human.reason == "user_asked_for_human"


def test_a_changed_bot_file_is_refused(tiny_bot, tmp_path):
    copy = tmp_path / "bot"
    shutil.copytree(tiny_bot, copy)
    (copy / "templates.json").write_text(json.dumps({"positive": "Tampered"}))
    with pytest.raises(LmadaptError, match="file changed since the run was written: templates.json"):
        load_bot(copy)
    with pytest.raises(LmadaptError, match="not a bot folder") as caught:
        load_bot(tmp_path)
    assert "lmadapt support build" in caught.value.fix


def reading(intent="a", confidence=0.9, margin=0.8, ood=0.0, neighbours=((0, 0.95),), forced=False) -> Reading:
    return Reading(intent, confidence, margin, ood, forced, list(neighbours))


KNOWLEDGE = KnowledgeBase(["q a", "q b"], ["answer a", ""], ["a", "b"], {"b": "template b"})
THRESHOLDS = Thresholds(min_confidence=0.7, min_similarity=0.9, max_ood_score=1.0, ambiguity_gap=0.1)


@pytest.mark.parametrize(
    "case, text, failures, expected",
    [
        (reading(intent="b"), "hello", 0, ("template b", None, "template")),
        (reading(intent="a"), "hello", 0, ("answer a", None, "retrieval")),  # no template for a: nearest answer
        (reading(intent="b", confidence=0.5), "hello", 0, ("answer a", None, "retrieval")),
        (reading(intent="b", confidence=0.5, neighbours=((0, 0.5),)), "hello", 0, (None, "low_confidence", None)),
        (reading(ood=2.0), "hello", 0, (None, "out_of_scope", None)),
        (reading(forced=True), "hello", 0, (None, "out_of_scope", None)),
        (reading(margin=0.05), "hello", 0, (None, "ambiguous", None)),
        (reading(), "can I speak to a  HUMAN agent", 0, (None, "user_asked_for_human", None)),
        (reading(ood=2.0), "hello", 2, (None, "repeated_failure", None)),
        (reading(intent="b"), "hello", 2, ("template b", None, "template")),  # answered: failures do not matter
    ],
)
def test_the_policy_decides_in_order(case, text, failures, expected):
    reply = decide(case, text, KNOWLEDGE, THRESHOLDS, PolicyConfig(), failures)
    answer, reason, route = expected
    assert (reply.reason, reply.route, reply.escalate) == (reason, route, reason is not None)
    if answer is not None:
        assert reply.answer == answer
    similarity = case.neighbours[0][1]
    assert reply.sources[0] == {"question": "q a", "answer": "answer a", "intent": "a", "similarity": similarity}


def random_readings(n: int, seed: int) -> tuple[list[Reading], list[str | None], list[str]]:
    rng = np.random.default_rng(seed)
    readings, truth, texts = [], [], []
    for i in range(n):
        intent = str(rng.choice(["a", "b"]))
        readings.append(
            reading(
                intent=intent,
                confidence=float(rng.uniform(0.3, 1)),
                margin=float(rng.uniform(0, 1)),
                ood=float(rng.normal()),
                neighbours=[(int(rng.integers(2)), float(rng.uniform(0.5, 1)))],
                forced=bool(rng.random() < 0.05),
            )
        )
        truth.append(None if rng.random() < 0.2 else (intent if rng.random() < 0.8 else "ab"[intent == "a"]))
        texts.append("talk to a human" if rng.random() < 0.05 else f"message {i}")
    return readings, truth, texts


def test_the_calibration_arrays_decide_as_the_policy_does():
    readings, truth, texts = random_readings(300, seed=1)
    signals = Signals.of(readings, texts, truth, KNOWLEDGE, PolicyConfig())
    for thresholds in (THRESHOLDS, Thresholds(0.5, 0.7, 0.3, 0.2), Thresholds(0.9, 0.95, None, 0.0)):
        answered, right = signals.outcome(thresholds)
        replies = [decide(r, t, KNOWLEDGE, thresholds, PolicyConfig()) for r, t in zip(readings, texts)]
        assert answered.tolist() == [not reply.escalate for reply in replies]
        expected_right = [
            not reply.escalate
            and truth[i] is not None
            and (reply.intent if reply.route == "template" else reply.sources[0]["intent"]) == truth[i]
            for i, reply in enumerate(replies)
        ]
        assert right.tolist() == expected_right


def test_calibration_answers_the_most_at_the_target_accuracy_or_says_it_missed():
    readings, truth, texts = random_readings(400, seed=2)
    signals = Signals.of(readings, texts, truth, KNOWLEDGE, PolicyConfig())

    def calibrated(policy, on=signals):
        return calibrate(sweep(on, policy, run_threshold=None), policy)

    thresholds, found = calibrated(PolicyConfig(target_accuracy=0.9))
    assert found["met"] and found["answered_accuracy"] >= 0.9
    looser = calibrated(PolicyConfig(target_accuracy=0.8))[1]
    assert looser["containment"] >= found["containment"]
    with_recall = calibrated(PolicyConfig(target_accuracy=0.8, target_oos_recall=0.95))[1]
    assert with_recall["oos_recall"] >= 0.95
    wrong = [None if t is None else "c" for t in truth]  # an intent no reading and no known question has
    wrong_signals = Signals.of(readings, texts, wrong, KNOWLEDGE, PolicyConfig())
    impossible = calibrated(PolicyConfig(target_accuracy=0.5), wrong_signals)[1]
    assert not impossible["met"]


def test_the_out_of_scope_threshold_can_sit_exactly_at_the_target_recall():
    scores = np.arange(20, dtype=float)
    for target in (0.85, 0.5, 1.0):
        threshold = recall_threshold(scores, target)
        escalated = (scores > threshold).mean()
        assert escalated >= target and (scores > threshold + 1).mean() < target  # the next score up escalates too few
    assert recall_threshold(np.array([3.0, -np.inf]), 0.0) == np.inf


def test_the_combined_out_of_scope_score_separates_better_than_either_input_on_held_out_messages():
    from sklearn.metrics import roc_auc_score

    # Out of scope: far from every intent (a high run score) yet read with confidence, like unseen banking intents.
    rng = np.random.default_rng(0)
    n_in, n_out = 400, 200
    run_scores = np.concatenate([rng.lognormal(3.0, 0.5, n_in), rng.lognormal(3.6, 0.5, n_out)])
    confidences = np.concatenate([rng.beta(5, 2, n_in), rng.beta(12, 1, n_out)])
    outside = np.arange(n_in + n_out) >= n_in
    score, held_out = fit_scope_score(run_scores, confidences, outside, seed=0)
    combined = roc_auc_score(outside, held_out)
    assert combined > roc_auc_score(outside, run_scores) + 0.05 and combined > roc_auc_score(outside, confidences)
    # The bot's score (the mean of the fold models) ranks as the held-out scores do, and is finite everywhere
    assert np.corrcoef(score(run_scores, confidences), held_out)[0, 1] > 0.99
    assert np.isfinite(score(np.array([-5.0, 0.0, 1e9]), np.array([1.0, 0.0, 0.5]))).all()
    # Too few out-of-scope messages to weigh the two: the run's own score is kept
    assert fit_scope_score(run_scores[: n_in + 9], confidences[: n_in + 9], outside[: n_in + 9], seed=0) is None


def test_retrieval_metrics_follow_their_definitions():
    ranked = [["a", "b"], ["b", "a"], ["b", "b", "b", "b", "b", "a"], ["b"] * 12]
    found = retrieval_metrics(ranked, ["a", "a", "a", "a"])
    assert found["recall_at_1"] == 0.25 and found["recall_at_5"] == 0.5
    assert found["mrr_at_10"] == pytest.approx((1 + 1 / 2 + 1 / 6 + 0) / 4)


def test_evaluation_reports_containment_escalations_retrieval_and_a_plot(bot, tiny_bot, tmp_path):
    import pandas as pd

    history = pd.read_csv(tiny_bot.parent.parent / "history.csv")
    history.iloc[::5].to_csv(tmp_path / "messages.csv", index=False)
    report = evaluate_bot(bot, str(tmp_path / "messages.csv"), tmp_path / "report")
    assert report["messages"] == len(history.iloc[::5]) and report["out_of_scope_messages"] == 12
    assert report["oos_recall"] >= 0.9 and report["containment"] >= 0.8 and report["answered_accuracy"] >= 0.95
    assert report["retrieval"]["recall_at_1"] >= 0.9 and report["latency_ms"]["p95"] > 0
    assert report["escalations"]["out_of_scope"] >= 0.15
    assert (tmp_path / "report" / "containment.png").read_bytes().startswith(PNG)
    assert "| containment |" in (tmp_path / "report" / "report.md").read_text()


def chat(client, message, conversation_id=None, **headers):
    body = {"message": message} | ({"conversation_id": conversation_id} if conversation_id else {})
    return client.post("/v1/chat", json=body, headers=headers)


def test_the_service_answers_stores_hands_off_and_takes_feedback(bot, tmp_path):
    url = f"sqlite:///{tmp_path / 'support.sqlite'}"
    with ConversationStore(url) as store, TestClient(create_support_app(bot, store, ServiceSettings())) as client:
        first = chat(client, POSITIVE)
        assert first.status_code == 200, first.text
        reply = first.json()
        assert reply["intent"] == "positive" and reply["answer"] == "Template: glad!" and not reply["escalate"]
        conversation = reply["conversation_id"]
        outside = chat(client, OUT_OF_SCOPE, conversation).json()
        assert outside["escalate"] and outside["reason"] == "out_of_scope"
        # a correction and a thumbs up, stored for the next update
        feedback = {"conversation_id": conversation, "turn_id": outside["turn_id"], "corrected_intent": "negative"}
        assert client.post("/v1/feedback", json=feedback).status_code == 200
        assert client.post("/v1/feedback", json={"conversation_id": conversation, "rating": "up"}).status_code == 200
        # a person takes over: the bot stays silent, the message is still stored
        assert client.post(f"/v1/conversations/{conversation}/handoff", json={"agent": "ana"}).status_code == 200
        silent = chat(client, POSITIVE, conversation).json()
        assert silent["answer"] is None and silent["reason"] == "handed_off"
        stored = client.get(f"/v1/conversations/{conversation}").json()
        assert stored["status"] == "handed_off" and stored["agent"] == "ana"
        assert [t["user_text"] for t in stored["turns"]] == [POSITIVE, OUT_OF_SCOPE, POSITIVE]
        assert 'lmadapt_support_replies_total{outcome="out_of_scope"} 1.0' in client.get("/metrics").text
        assert client.get("/").headers["content-type"].startswith("text/html")
    with ConversationStore(url) as reopened:  # it survives the service
        assert reopened.counts()["turns"] == 3
        assert reopened.training_rows() == [
            {"text": OUT_OF_SCOPE, "intent": "negative", "source": "feedback", "id": reopened.training_rows()[0]["id"]}
        ]


def test_asking_for_a_person_or_failing_twice_hands_the_conversation_over(bot, tmp_path):
    with (
        ConversationStore(f"sqlite:///{tmp_path / 's.sqlite'}") as store,
        TestClient(create_support_app(bot, store, ServiceSettings())) as client,
    ):
        asked = chat(client, "can I talk to a human").json()
        assert asked["reason"] == "user_asked_for_human"
        assert store.conversation(asked["conversation_id"])["status"] == "handed_off"
        first = chat(client, OUT_OF_SCOPE).json()
        conversation = first["conversation_id"]
        assert chat(client, "z x c v b", conversation).json()["reason"] == "out_of_scope"
        assert chat(client, "m n b v c", conversation).json()["reason"] == "repeated_failure"
        assert store.conversation(conversation)["status"] == "handed_off"


@pytest.mark.parametrize(
    "request_body, status, code",
    [
        ({"message": ""}, 422, "invalid_request"),
        ({"message": "x" * 10_001}, 422, "text_too_long"),
        ({"message": "hello", "conversation_id": "nope"}, 404, "unknown_conversation"),
        ({}, 422, "invalid_request"),
    ],
)
def test_bad_chat_requests_get_a_json_error(bot, tmp_path, request_body, status, code):
    with (
        ConversationStore(f"sqlite:///{tmp_path / 's.sqlite'}") as store,
        TestClient(create_support_app(bot, store, ServiceSettings(max_chars=10_000))) as client,
    ):
        response = client.post("/v1/chat", json=request_body)
        assert response.status_code == status and response.json()["error"]["code"] == code


def test_feedback_with_an_unknown_intent_and_a_missing_key_are_refused(bot, tmp_path):
    with (
        ConversationStore(f"sqlite:///{tmp_path / 's.sqlite'}") as store,
        TestClient(create_support_app(bot, store, ServiceSettings(api_key="secret"))) as client,
    ):
        assert chat(client, POSITIVE).status_code == 401
        assert client.get("/").status_code == 200  # the page holds no data: it asks for the key
        conversation = chat(client, POSITIVE, **{"X-API-Key": "secret"}).json()["conversation_id"]
        wrong = client.post(
            "/v1/feedback",
            json={"conversation_id": conversation, "turn_id": 1, "corrected_intent": "neutral"},
            headers={"X-API-Key": "secret"},
        )
        assert (
            wrong.status_code == 422 and "'neutral' is not one of the bot's intents" in wrong.json()["error"]["message"]
        )


def test_the_service_stores_conversations_in_postgresql(bot, postgresql_database):
    with (
        ConversationStore(postgresql_database) as store,
        TestClient(create_support_app(bot, store, ServiceSettings())) as client,
    ):
        conversation = chat(client, POSITIVE).json()["conversation_id"]
        chat(client, OUT_OF_SCOPE, conversation)
    with ConversationStore(postgresql_database) as reopened:
        turns = reopened.conversation(conversation)["turns"]
        assert [(t["intent"], t["reason"]) for t in turns] == [("positive", None), (turns[1]["intent"], "out_of_scope")]


def test_an_update_learns_the_corrections_into_a_new_version(tiny_bot, tmp_path):
    url = f"sqlite:///{tmp_path / 'queue.sqlite'}"
    with ConversationStore(url) as store:
        conversation = store.start_conversation()
        turn = store.add_turn(conversation, "a dull and clumsy ending", {"intent": "positive", "escalate": False})
        store.add_feedback(conversation, turn, "down", "negative")
    bots = tmp_path / "bots"
    shutil.copytree(tiny_bot, bots / "bot")
    folder = update_bot(bots / "bot", store_url=url, progress=lambda _: None)
    assert folder == bots / "bot-v2"
    new = load_bot(folder)
    assert new.version == 2 and new.record["parent"] == "bot" and new.record["learnt"]["feedback"] == 1
    assert new.run.metrics["continual"]["method"] == "replay" and new.predictor.ood is not None
    assert new.answer([OUT_OF_SCOPE])[0].reason == "out_of_scope" and new.answer([POSITIVE])[0].intent == "positive"
    assert json.loads((bots / "bot" / BOT_FILE).read_text())["version"] == 1  # the old version is untouched
    with pytest.raises(LmadaptError, match="bot folder already exists"):
        update_bot(bots / "bot", store_url=url)
    with pytest.raises(LmadaptError, match="no corrected intents and no resolved handoffs") as caught:
        update_bot(bots / "bot", store_url=f"sqlite:///{tmp_path / 'empty.sqlite'}", name="v3")
    assert "corrected_intent" in caught.value.fix


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["history.path=null", "templates.path=null"], "nothing to answer from"),
        (["history.path=null"], "templates alone give no questions to learn the intents from"),
        (["retrieval.index=faiss"], "unknown index 'faiss'"),
        (["retrieval.index=qdrant"], "index=qdrant needs a Qdrant server or a local folder"),
        (["policy.target_accuracy=1.5"], "policy.target_accuracy must lie in (0, 1]"),
        (["policy.colour=red"], "unknown config key 'policy.colour'"),
    ],
)
def test_bad_support_settings_are_refused(overrides, message, tmp_path):
    files = support_history(tmp_path)
    with pytest.raises(LmadaptError) as caught:
        load_support_config(None, [*support_overrides(tmp_path, files, tmp_path / "bots"), *overrides])
    assert message in str(caught.value)


def test_a_history_without_the_question_column_is_refused_with_the_columns_found(tuned_tiny_bert, tmp_path):
    from lmadapt.apps.support.bot import build_bot

    files = support_history(tmp_path)
    config = load_support_config(
        None, [*support_overrides(tuned_tiny_bert, files, tmp_path / "bots"), "history.question_column=text"]
    )
    with pytest.raises(LmadaptError, match="column 'text' not found; the file has columns: question, intent, answer"):
        build_bot(config)
    assert not (tmp_path / "bots").exists()


def test_the_command_line_answers_and_refuses_bad_input_with_exit_code_2(tiny_bot, tmp_path):
    lmadapt = [sys.executable, "-m", "lmadapt.cli"]
    asked = subprocess.run(
        [*lmadapt, "support", "ask", str(tiny_bot), POSITIVE], capture_output=True, text=True, cwd=REPO
    )
    assert asked.returncode == 0 and "Template: glad!" in asked.stdout and "positive" in asked.stdout
    (tmp_path / "bad.yaml").write_text("history:\n  path: missing.csv\npolicy:\n  target_accuracy: 2\n")
    built = subprocess.run([*lmadapt, "support", "build", str(tmp_path / "bad.yaml")], capture_output=True, text=True)
    assert built.returncode == 2 and "policy.target_accuracy must lie in (0, 1]" in built.stderr
    assert "Traceback" not in built.stderr


def test_a_bot_reusing_a_run_with_hybrid_retrieval_in_qdrant_answers_as_the_first(tiny_bot, tmp_path):
    """The intent run reused (copied, not trained again), the index in Qdrant's embedded mode, BM25 blended in."""
    from lmadapt.apps.support.bot import build_bot

    files = support_history(tmp_path)
    overrides = [
        *support_overrides(tmp_path, files, tmp_path / "bots", name="hybrid"),
        f"intent.run={tiny_bot / 'intent'}",
        "retrieval.index=qdrant",
        f"retrieval.qdrant_path={tmp_path / 'qdrant'}",
        "retrieval.lexical_weight=0.3",
    ]
    hybrid = load_bot(build_bot(load_support_config(None, overrides), progress=lambda _: None))
    assert hybrid.record["index"]["kind"] == "qdrant" and hybrid.lexical is not None
    first = load_bot(tiny_bot)
    assert hybrid.run.metrics == first.run.metrics  # the same run
    texts = [POSITIVE, OUT_OF_SCOPE, "a dull and clumsy ending"]
    for ours, theirs in zip(hybrid.answer(texts), first.answer(texts)):
        assert (ours.intent, ours.reason) == (theirs.intent, theirs.reason)
    # the blended score: (1 - w) * cosine + w * BM25 scaled to the best of the message, over both candidate lists
    reading = hybrid.read(["superb acting 7"], k=3)[0]
    similarities = [similarity for _, similarity in reading.neighbours]
    assert similarities == sorted(similarities, reverse=True) and all(-1 <= s <= 1.0 + 1e-6 for s in similarities)
    entry = reading.neighbours[0][0]
    cosine = float(
        hybrid.question_vectors[entry]
        @ hybrid.predictor.features(["superb acting 7"])[0]
        / np.linalg.norm(hybrid.predictor.features(["superb acting 7"])[0])
    )
    lexical_scores, lexical_ids = hybrid.lexical.search(["superb acting 7"], 3)
    sparse = dict(zip(lexical_ids[0].tolist(), (lexical_scores[0] / lexical_scores[0][0]).tolist()))
    assert reading.neighbours[0][1] == pytest.approx(0.7 * cosine + 0.3 * sparse.get(entry, 0.0), abs=1e-4)
