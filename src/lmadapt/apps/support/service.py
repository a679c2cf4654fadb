"""The support bot on the shared service (`lmadapt support serve`): its routes beside /v1/predict, with the same
API key, limits, metrics and JSON errors.

    POST /v1/chat                          {conversation_id?, message} -> the reply, stored with the message
    GET  /v1/conversations/{id}            the conversation: turns, handoff, people's messages
    POST /v1/conversations/{id}/handoff    a person takes over: the bot stays silent in it
    POST /v1/conversations/{id}/messages   a person's reply in a handed-off conversation
    POST /v1/conversations/{id}/resolve    a person closes it, naming the customer's intent (learnt by `update`)
    POST /v1/feedback                      thumbs up/down and a corrected intent on a turn
    GET  /v1/bot                           the bot: name, version, intents, thresholds
    GET  /                                 a chat page to try the bot and see why it escalates

A reply is returned once it is stored (an acknowledged message survives a crash of the service).
"""

from __future__ import annotations

import time
from importlib.resources import files
from typing import Literal

from fastapi import Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from lmadapt.apps.support.bot import Bot
from lmadapt.apps.support.policy import HANDOFF_REASONS
from lmadapt.apps.support.store import ConversationStore, UnknownConversation, new_conversation_id
from lmadapt.errors import LmadaptError
from lmadapt.serving.errors import ERROR_RESPONSES, ApiError
from lmadapt.serving.routes import ServiceRouter, model_pool
from lmadapt.serving.settings import ServiceSettings

READER = "support"  # the pool's reader of messages
SILENT = "handed_off"  # the reason of a message in a conversation a person has taken over


class ChatRequest(BaseModel):
    conversation_id: str | None = Field(None, description="The conversation to continue; absent: start one.")
    message: str = Field(description="The customer's message.", min_length=1, examples=["I lost my card"])


class Source(BaseModel):
    question: str
    answer: str
    intent: str | None
    similarity: float


class ChatResponse(BaseModel):
    conversation_id: str
    turn_id: int
    answer: str | None = Field(description="The bot's answer (null: a person has the conversation).")
    intent: str | None
    confidence: float | None = Field(description="The intent's probability.")
    sources: list[Source] = Field(description="The nearest known questions, best first.")
    escalate: bool = Field(description="Whether a person should answer this message.")
    reason: str | None = Field(
        description="Why it escalated: out_of_scope, low_confidence, ambiguous, user_asked_for_human, "
        "repeated_failure, or handed_off (a person has the conversation)."
    )


class Handoff(BaseModel):
    agent: str | None = Field(None, description="Who takes over.")
    note: str | None = Field(None, description="A note for the conversation's record.")


class AgentMessage(BaseModel):
    text: str = Field(min_length=1, description="The person's reply.")


class Resolution(BaseModel):
    intent: str | None = Field(None, description="The customer's intent, to learn from (one of the bot's intents).")


class Feedback(BaseModel):
    conversation_id: str
    turn_id: int | None = Field(None, description="The turn it is about (needed for a corrected intent).")
    rating: Literal["up", "down"] | None = None
    corrected_intent: str | None = Field(None, description="The intent the message really had.")
    comment: str | None = None


def chat_page() -> str:
    return files("lmadapt.apps.support").joinpath("chat.html").read_text(encoding="utf-8")


def reply_counter(pool):
    from prometheus_client import Counter

    return Counter(
        "lmadapt_support_replies",
        "Chat replies by outcome: answered (template or retrieval) or the escalation's reason.",
        ["outcome"],
        registry=pool.metrics.registry,
    )


def support_router(bot: Bot, store: ConversationStore, settings: ServiceSettings) -> ServiceRouter:
    router = ServiceRouter()
    replies = None
    intents = set(bot.run.labels.labels)

    def in_store(call, *args, **options):
        """A store call off the event loop; an unknown conversation is a 404, another refusal a 409."""

        def guarded():
            try:
                return call(*args, **options)
            except UnknownConversation as error:
                raise ApiError(
                    404, "unknown_conversation", error.what, fix="start a conversation with POST /v1/chat"
                ) from None
            except LmadaptError as error:
                raise ApiError(409, "refused", error.what, fix=error.fix) from None

        return run_in_threadpool(guarded)

    def known_intent(intent: str | None, field: str) -> None:
        if intent is not None and intent not in intents:
            raise ApiError(
                422,
                "unknown_intent",
                f"{field} '{intent}' is not one of the bot's intents",
                fix="GET /v1/bot lists them",
            )

    @router.post("/v1/chat", response_model=ChatResponse, responses=ERROR_RESPONSES)
    async def chat(body: ChatRequest, request: Request) -> ChatResponse:
        """The bot's reply to a customer's message (stored with it before the response)."""
        nonlocal replies
        started = time.perf_counter()
        pool = model_pool(request)
        replies = replies or reply_counter(pool)
        try:
            bot.check_reads([body.message], "message")
        except LmadaptError as error:
            raise ApiError(422, "unreadable_texts", error.what, fix=error.fix) from None
        conversation_id = body.conversation_id or new_conversation_id()
        state = (
            await in_store(store.state, conversation_id, bot.config.policy.max_failures)
            if body.conversation_id
            else {"status": "bot", "recent_failures": 0}
        )
        if state["status"] == "handed_off":
            reply = {
                "answer": None,
                "intent": None,
                "confidence": None,
                "sources": [],
                "escalate": True,
                "reason": SILENT,
            }
        else:
            reading = (await pool.read(READER, [body.message]))[0]
            decided = bot.reply(body.message, reading, state["recent_failures"])
            reply = {
                "answer": decided.answer,
                "intent": decided.intent,
                "confidence": decided.confidence,
                "sources": decided.sources,
                "escalate": decided.escalate,
                "reason": decided.reason,
            }
        reply["latency_ms"] = round(1000 * (time.perf_counter() - started), 2)
        turn_id = await in_store(
            store.add_turn,
            conversation_id,
            body.message,
            reply,
            start=body.conversation_id is None,
            hand_off=reply["reason"] if reply["reason"] in HANDOFF_REASONS else None,
        )
        replies.labels(reply["reason"] or "answered").inc()
        return ChatResponse(
            conversation_id=conversation_id, turn_id=turn_id, **{k: v for k, v in reply.items() if k != "latency_ms"}
        )

    @router.get("/v1/conversations/{conversation_id}", responses=ERROR_RESPONSES)
    async def conversation(conversation_id: str) -> dict:
        """The conversation as stored: status, turns with the bot's replies, people's messages."""
        return await in_store(store.conversation, conversation_id)

    @router.post("/v1/conversations/{conversation_id}/handoff", responses=ERROR_RESPONSES)
    async def handoff(conversation_id: str, body: Handoff) -> dict:
        """A person takes over the conversation; the bot no longer answers in it."""
        return await in_store(store.hand_off, conversation_id, body.agent, body.note)

    @router.post("/v1/conversations/{conversation_id}/messages", responses=ERROR_RESPONSES)
    async def agent_message(conversation_id: str, body: AgentMessage) -> dict:
        """A person's reply in a conversation they have taken over."""
        return {"id": await in_store(store.add_agent_message, conversation_id, body.text)}

    @router.post("/v1/conversations/{conversation_id}/resolve", responses=ERROR_RESPONSES)
    async def resolve(conversation_id: str, body: Resolution) -> dict:
        """A person closes the conversation; the intent named is learnt by `lmadapt support update`."""
        known_intent(body.intent, "intent")
        return await in_store(store.resolve, conversation_id, body.intent)

    @router.post("/v1/feedback", responses=ERROR_RESPONSES)
    async def feedback(body: Feedback) -> dict:
        """Thumbs up or down on a turn, and the intent it really had (learnt by `lmadapt support update`)."""
        known_intent(body.corrected_intent, "corrected_intent")
        feedback_id = await in_store(
            store.add_feedback, body.conversation_id, body.turn_id, body.rating, body.corrected_intent, body.comment
        )
        return {"id": feedback_id}

    @router.get("/v1/bot")
    async def bot_info() -> dict:
        """The bot served: name, version, intents, thresholds and the limits of a message."""
        return {
            "name": bot.name,
            "version": bot.version,
            "intents": sorted(intents),
            "thresholds": bot.thresholds.to_json(),
            "backend": bot.backend,
            "max_chars": settings.max_chars,
        }

    return router


def create_support_app(bot: Bot, store: ConversationStore, settings: ServiceSettings):
    """The service with the bot's routes, its batched reader of messages and the chat page; /v1/predict serves its
    intent run too."""
    from lmadapt.serving.app import create_app

    return create_app(
        [bot.run],
        settings,
        routers=[support_router(bot, store, settings)],
        readers={READER: bot.read},
        pages={"/": chat_page()},
    )


def serve_bot(
    folder,
    store_url: str | None,
    settings: ServiceSettings,
    backend: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    shutdown_timeout_s: float = 30.0,
    announce=print,
) -> None:
    """Serve a bot folder until SIGINT or SIGTERM (see `lmadapt support serve`); `backend` (default: the one its
    thresholds were calibrated on) reads the messages, and serves /v1/predict too."""
    import dataclasses
    from pathlib import Path

    from lmadapt.apps.support.bot import load_bot
    from lmadapt.apps.support.update import default_store_url
    from lmadapt.inference.predictor import worker_count
    from lmadapt.serving.app import serve_forever

    folder = Path(folder)
    bot = load_bot(folder, backend=backend, engine_workers=worker_count(settings.workers))
    if bot.backend != bot.calibrated_backend:
        announce(
            f"note: the thresholds were calibrated on {bot.calibrated_backend} readings; served on {bot.backend}, "
            "its out-of-scope and confidence scores may differ a little"
        )
    settings = dataclasses.replace(settings, backend=bot.backend)
    url = store_url or default_store_url(folder, bot.name)
    with ConversationStore(url) as store:
        app = create_support_app(bot, store, settings)
        announce(
            f"serving {bot.name} v{bot.version} on http://{host}:{port} (chat page: /, docs: /docs); reading on "
            f"{bot.backend}; store: {url}"
        )
        serve_forever(app, host, port, shutdown_timeout_s)
