"""The service's routes, as routers built from the model pool and the settings, and what an application's
router uses to join them: ServiceRouter (strict JSON bodies, as the service's own) and the `Pool` dependency.

    from lmadapt.serving.routes import Pool, ServiceRouter

    router = ServiceRouter(prefix="/v1/support")

    @router.post("/answer")
    async def answer(question: Question, pool: Pool) -> Answer:
        intent = (await pool.predict("intent", [question.text]))[0]
        ...

    app = create_app(runs, settings, routers=[router])
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, WithJsonSchema, create_model

from lmadapt.serving.errors import ERROR_RESPONSES, ApiError
from lmadapt.serving.middleware import JsonRoute, key_dependencies
from lmadapt.serving.pool import ModelInfo, ModelPool
from lmadapt.serving.settings import ServiceSettings


class ServiceRouter(APIRouter):
    """An APIRouter whose routes read request bodies as the service's own do (JsonRoute): an application's
    routers are built with it, so a body that is not JSON gets the same 415 or 400."""

    def __init__(self, **options):
        super().__init__(route_class=JsonRoute, **options)


def model_pool(request: Request) -> ModelPool:
    """The pool of the app serving `request` (create_app puts it in app.state)."""
    return request.app.state.pool


Pool = Annotated[ModelPool, Depends(model_pool)]


def request_model(settings: ServiceSettings) -> type[BaseModel]:
    """The predict request's schema, with this service's limits in it (they are checked by the pool,
    which names the limit a request broke)."""
    text = Annotated[
        str, WithJsonSchema({"type": "string", "minLength": 1, "maxLength": settings.max_chars, "pattern": r"\S"})
    ]
    return create_model(
        "PredictRequest",
        model=(
            str | None,
            Field(None, description="A served model's name (GET /v1/models); optional when one is served."),
        ),
        texts=(
            list[text],
            Field(
                description="Texts to classify, each with a non-space character.",
                examples=[["a gripping, moving film"]],
                json_schema_extra={"minItems": 1, "maxItems": settings.max_texts},
            ),
        ),
        abstain=(
            bool,
            Field(
                True,
                description="For a model with out-of-scope detection: answer its abstain label for a text out of "
                "scope (false: the best label always).",
            ),
        ),
    )


class Prediction(BaseModel):
    label: str | None = Field(
        None, description="The predicted label (single-label models); the abstain label where the model abstained."
    )
    labels: list[str] | None = Field(None, description="The predicted labels (multi-label models).")
    scores: dict[str, float] = Field(description="Probability of each label.")
    abstained: bool | None = Field(
        None, description="Models with out-of-scope detection: whether the text was answered with the abstain label."
    )
    reason: str | None = Field(
        None, description="Why it abstained: out_of_scope, out_of_scope_class (a trained class) or ambiguous."
    )
    ood_score: float | None = Field(
        None, description="Models with out-of-scope detection: the text's out-of-scope score (higher: less in scope)."
    )


class PredictResponse(BaseModel):
    model: str
    predictions: list[Prediction]


def model_router(pool: ModelPool, settings: ServiceSettings) -> APIRouter:
    """POST /v1/predict and GET /v1/models."""
    router = ServiceRouter(dependencies=key_dependencies(settings))

    async def predict(request) -> Response:
        """Labels and per-label scores for each text; concurrent requests share forward passes."""
        name = pool.choose(request.model).name
        results = await pool.predict(name, request.texts, abstain=request.abstain)
        answer = PredictResponse(model=name, predictions=[Prediction(**result) for result in results])
        # Serialized by pydantic directly: FastAPI would validate and encode it again (costly per request).
        return Response(answer.model_dump_json(exclude_none=True), media_type="application/json")

    # The request's type is built for this service's limits, so it is set here, not in a (string) annotation.
    predict.__annotations__["request"] = request_model(settings)
    router.post("/v1/predict", response_model=PredictResponse, responses=ERROR_RESPONSES)(predict)

    @router.get("/v1/models", response_model=list[ModelInfo])
    async def list_models() -> list[ModelInfo]:
        """The models this service classifies with."""
        return [served.info() for served in pool.models.values()]

    return router


def health_router(pool: ModelPool, settings: ServiceSettings) -> APIRouter:
    """GET /healthz and GET /metrics."""
    router = ServiceRouter(dependencies=key_dependencies(settings))

    @router.get("/healthz")
    async def healthz() -> dict:
        """Liveness: the service is up, its models are loaded and their batchers run (else 503)."""
        stopped = pool.stopped()
        if stopped:
            raise ApiError(503, "not_ready", f"no batcher runs for {', '.join(stopped)}", fix="restart the service")
        return {"status": "ok", "models": len(pool.models)}

    @router.get("/metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        """Counters and histograms in the Prometheus text format."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(pool.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
