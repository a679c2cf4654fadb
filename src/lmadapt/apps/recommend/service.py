"""The recommender on the shared service (`lmadapt recommend serve`): its routes with the service's API key, limits,
metrics and JSON errors.

    GET  /v1/recommend?user=&k=      a known user's top k, what they interacted with left out (unknown user: 404)
    POST /v1/recommend               {"user": ...} as the GET, or {"items": [ids, oldest first], "text": "..."}: top
                                     k for a visitor from the items they liked and/or a description (a description
                                     needs a text model; an unknown item id: 422 naming it)
    GET  /v1/similar?item=&k=        the items nearest to an item
    GET  /v1/recommender             the recommender: name, model, counts, metrics
"""

from __future__ import annotations

from pathlib import Path

from fastapi import Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from lmadapt.apps.recommend.recommender import SavedRecommender, UnknownUser, open_recommender
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


def recommend_router(saved: SavedRecommender, settings: ServiceSettings) -> ServiceRouter:
    router = ServiceRouter()

    async def answer(call, *args, **options) -> RecommendResponse:
        """A recommendation off the event loop; an unknown user is a 404, another refusal (an unknown item, a
        model that reads no text) a 422 with its message."""

        def guarded():
            try:
                return call(*args, **options)
            except UnknownUser as error:
                raise ApiError(404, "unknown_user", error.what, fix=error.fix) from None
            except LmadaptError as error:
                raise ApiError(422, "refused", error.what, fix=error.fix) from None

        found = await run_in_threadpool(guarded)
        return RecommendResponse(recommender=saved.name, model=saved.model.name, items=found)

    @router.get("/v1/recommend", response_model=RecommendResponse, responses=ERROR_RESPONSES)
    async def recommend_user(
        user: str = Query(..., description="A user id of the data the recommender learnt from."),
        k: int = Query(10, ge=1, le=MAX_K, description="How many items."),
    ) -> RecommendResponse:
        """A user's top k, what they interacted with left out."""
        return await answer(saved.recommend, user, k)

    @router.post("/v1/recommend", response_model=RecommendResponse, responses=ERROR_RESPONSES)
    async def recommend_visitor(body: RecommendRequest) -> RecommendResponse:
        """A known user's top k, or a visitor's from the items they liked and/or a description of what they like."""
        if body.user is not None:
            if body.items or body.text:
                raise ApiError(
                    422, "user_and_history", "give a user or a history, not both", fix='send {"user": ...} alone'
                )
            return await answer(saved.recommend, body.user, body.k)
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
        return await answer(saved.for_history, body.items or [], body.text, body.k)

    @router.get("/v1/similar", response_model=RecommendResponse, responses=ERROR_RESPONSES)
    async def similar(
        item: str = Query(..., description="An item id of the catalogue."),
        k: int = Query(10, ge=1, le=MAX_K, description="How many items."),
    ) -> RecommendResponse:
        """The items nearest to an item, the item itself left out."""
        return await answer(saved.similar, item, k)

    @router.get("/v1/recommender")
    async def recommender_info() -> dict:
        """The recommender served: its name, model, counts and the metrics it was trained with."""
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
