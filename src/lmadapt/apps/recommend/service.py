"""The recommender on the shared service (`lmadapt recommend serve`): its routes with the service's API key, limits,
metrics and JSON errors.

    GET  /v1/recommend?user=&k=      a known user's top k, what they interacted with left out (unknown user: 404)
    POST /v1/recommend               {"user": ...} as the GET, or {"items": [ids, oldest first], "text": "..."}: top
                                     k for a visitor from the items they liked and/or a description (a description
                                     needs a text model; an unknown item id: 422 naming it)
    GET  /v1/similar?item=&k=        the items nearest to an item
    POST /v1/items                   {"items": [{"id": ..., "text": ...}]}: new items by their text, written into the
                                     folder (atomically) before the answer and recommendable from the next request
                                     (a model that reads no text: 422)
    GET  /v1/recommender             the recommender: name, model, counts, metrics
"""

from __future__ import annotations

import threading
from pathlib import Path

from fastapi import Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from lmadapt.apps.recommend.recommender import SavedRecommender, UnknownUser, add_items, open_recommender
from lmadapt.errors import LmadaptError
from lmadapt.serving.errors import ERROR_RESPONSES, ApiError
from lmadapt.serving.routes import ServiceRouter
from lmadapt.serving.settings import ServiceSettings

MAX_K = 1000


class RecommendRequest(BaseModel):
    user: str | None = Field(None, description="A known user: the same answer as GET /v1/recommend.")
    items: list[str] | None = Field(None, description="Items a visitor liked, oldest first.", examples=[["50", "181"]])
    text: str | None = Field(
        None, description="What a visitor likes, in words (a text model).", examples=["a funny film about a heist"]
    )
    k: int = Field(10, ge=1, le=MAX_K, description="How many items.")


class Recommendation(BaseModel):
    item: str
    score: float
    text: str = Field(description="The item's text (title, genres, ...).")


class RecommendResponse(BaseModel):
    recommender: str
    model: str
    items: list[Recommendation]


class NewItem(BaseModel):
    id: str = Field(min_length=1, description="The item's id: new to the catalogue.", examples=["2001"])
    text: str = Field(
        min_length=1, description="What the item says (title, genres, ...).", examples=["Galaxy Raiders (2026)"]
    )


class ItemsRequest(BaseModel):
    items: list[NewItem] = Field(min_length=1, description="The new items.")


class ItemsResponse(BaseModel):
    recommender: str
    added: int = Field(description="Items added by this request.")
    items: int = Field(description="Items in the catalogue now.")


def guarded(work):
    """`work()`, its refusals as the API's errors: an unknown user is a 404, another (an unknown item, a model that
    reads no text, an item id already known) a 422 with its message."""
    try:
        return work()
    except UnknownUser as error:
        raise ApiError(404, "unknown_user", error.what, fix=error.fix) from None
    except LmadaptError as error:
        raise ApiError(422, "refused", error.what, fix=error.fix) from None


class Served:
    """The recommender the routes answer from. Adding items replaces it whole (a request reads one version); the
    lock keeps two additions from writing the folder at once."""

    def __init__(self, saved: SavedRecommender):
        self.saved = saved
        self.lock = threading.Lock()

    def add(self, ids: list[str], texts: list[str]) -> SavedRecommender:
        with self.lock:
            self.saved = add_items(self.saved.path, ids, texts)
            return self.saved


def recommend_router(saved: SavedRecommender, settings: ServiceSettings) -> ServiceRouter:
    router = ServiceRouter()
    served = Served(saved)

    async def answer(call: str, *args, **options) -> RecommendResponse:
        """The current recommender's `call` (recommend, for_history, similar) off the event loop."""
        current = served.saved
        found = await run_in_threadpool(guarded, lambda: getattr(current, call)(*args, **options))
        return RecommendResponse(recommender=current.name, model=current.model.name, items=found)

    @router.get("/v1/recommend", response_model=RecommendResponse, responses=ERROR_RESPONSES)
    async def recommend_user(
        user: str = Query(..., description="A user id of the data the recommender learnt from."),
        k: int = Query(10, ge=1, le=MAX_K, description="How many items."),
    ) -> RecommendResponse:
        """A user's top k, what they interacted with left out."""
        return await answer("recommend", user, k)

    @router.post("/v1/recommend", response_model=RecommendResponse, responses=ERROR_RESPONSES)
    async def recommend_visitor(body: RecommendRequest) -> RecommendResponse:
        """A known user's top k, or a visitor's from the items they liked and/or a description of what they like."""
        if body.user is not None:
            if body.items or body.text:
                raise ApiError(
                    422, "user_and_history", "give a user or a history, not both", fix='send {"user": ...} alone'
                )
            return await answer("recommend", body.user, body.k)
        if not body.items and body.text is None:
            raise ApiError(
                422,
                "nothing_to_recommend_from",
                "the request names no user, no items and no text",
                fix='send {"user": "196"}, {"items": ["50", "181"]} or {"text": "films like this description"}',
            )
        if body.items and len(body.items) > settings.max_texts:
            raise ApiError(
                422,
                "too_many_items",
                f"{len(body.items)} items in the history; the limit is {settings.max_texts}",
                fix=f"send the latest {settings.max_texts} at most",
            )
        if body.text is not None and len(body.text) > settings.max_chars:
            raise ApiError(
                422,
                "text_too_long",
                f"the text has {len(body.text)} characters; the limit is {settings.max_chars}",
                fix="shorten the description",
            )
        return await answer("for_history", body.items or [], body.text, body.k)

    @router.get("/v1/similar", response_model=RecommendResponse, responses=ERROR_RESPONSES)
    async def similar(
        item: str = Query(..., description="An item id of the catalogue."),
        k: int = Query(10, ge=1, le=MAX_K, description="How many items."),
    ) -> RecommendResponse:
        """The items nearest to an item, the item itself left out."""
        return await answer("similar", item, k)

    @router.post("/v1/items", response_model=ItemsResponse, responses=ERROR_RESPONSES)
    async def new_items(body: ItemsRequest) -> ItemsResponse:
        """New items known by their text alone: written into the recommender folder before the answer (a restart
        keeps them) and recommendable from the next request, without retraining."""
        if len(body.items) > settings.max_texts:
            raise ApiError(
                422,
                "too_many_items",
                f"{len(body.items)} items in one request; the limit is {settings.max_texts}",
                fix=f"send them in batches of {settings.max_texts} at most",
            )
        for item in body.items:
            if len(item.text) > settings.max_chars:
                raise ApiError(
                    422,
                    "text_too_long",
                    f"item '{item.id}' has {len(item.text)} characters of text; the limit is {settings.max_chars}",
                    fix="shorten its text",
                )
        ids, texts = [item.id for item in body.items], [item.text for item in body.items]
        now = await run_in_threadpool(guarded, lambda: served.add(ids, texts))
        return ItemsResponse(recommender=now.name, added=len(ids), items=len(now.catalog))

    @router.get("/v1/recommender")
    async def recommender_info() -> dict:
        """The recommender served: its name, model, counts and the metrics it was trained with."""
        saved = served.saved
        return {
            "name": saved.name,
            "model": saved.model.name,
            "items": len(saved.catalog),
            "users": len(saved.users),
            "record": saved.record,
            "metrics": None if saved.metrics is None else saved.metrics["metrics"],
        }

    return router


def create_recommend_app(saved: SavedRecommender, settings: ServiceSettings):
    """The service with the recommender's routes (it serves no classification run)."""
    from lmadapt.serving.app import create_app

    return create_app([], settings, routers=[recommend_router(saved, settings)])


def serve_recommender(
    folder: str | Path,
    settings: ServiceSettings,
    host: str = "127.0.0.1",
    port: int = 8000,
    shutdown_timeout_s: float = 30.0,
    announce=print,
) -> None:
    """Serve a recommender folder until SIGINT or SIGTERM (see `lmadapt recommend serve`)."""
    from lmadapt.serving.app import serve_forever

    saved = open_recommender(folder)
    app = create_recommend_app(saved, settings)
    announce(
        f"serving {saved.name} ({saved.model.name}, {len(saved.catalog)} items) on http://{host}:{port} (docs: /docs)"
    )
    serve_forever(app, host, port, shutdown_timeout_s)
