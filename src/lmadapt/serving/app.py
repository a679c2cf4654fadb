"""The REST service: FastAPI over one or more run folders, micro-batched, with limits, auth and metrics.

    POST /v1/predict   {"model": name, "texts": [...]} -> a label and per-label scores per text
    GET  /v1/models    the models served, their labels and inference backend
    GET  /healthz      liveness
    GET  /metrics      Prometheus text format: requests, latency, batch sizes, errors
    GET  /docs         OpenAPI documentation (/openapi.json: the schema)

Every error is a JSON body {"error": {"code", "message", "fix"}} with a 4xx status (504 on timeout).
"""

from __future__ import annotations

import asyncio
import email.message
import json
import secrets
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import BaseModel, Field, WithJsonSchema, create_model
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmadapt.errors import LmadaptError
from lmadapt.inference.predictor import threads_per_worker, worker_count
from lmadapt.runs import Run
from lmadapt.serving.batching import MicroBatcher
from lmadapt.serving.settings import MAX_PORT, MIN_PORT, ServiceSettings


class ApiError(Exception):
    """A request the service refuses: its status, a stable code, and what to do about it."""

    def __init__(self, status: int, code: str, message: str, fix: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.fix, self.headers = status, code, message, fix, headers


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable error code.")
    message: str = Field(description="What went wrong.")
    fix: str | None = Field(None, description="How to fix the request.")


class ErrorBody(BaseModel):
    error: ErrorDetail


def request_model(settings: ServiceSettings) -> type[BaseModel]:
    """The predict request's schema, with this service's limits in it (they are checked in the endpoint,
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
    )


class Prediction(BaseModel):
    label: str | None = Field(None, description="The predicted label (single-label models).")
    labels: list[str] | None = Field(None, description="The predicted labels (multi-label models).")
    scores: dict[str, float] = Field(description="Probability of each label.")


class PredictResponse(BaseModel):
    model: str
    predictions: list[Prediction]


class ModelInfo(BaseModel):
    name: str
    strategy: str
    backbone: str
    task: str
    labels: list[str]
    backend: str
    test_accuracy: float | None = None


class Metrics:
    """The Prometheus series the service exports, in a registry of its own."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lmadapt_requests", "HTTP requests by route and status.", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "lmadapt_request_seconds",
            "Request latency by route.",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "lmadapt_batch_size",
            "Texts per forward pass, by model.",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )
        self.texts = Counter(
            "lmadapt_predicted_texts", "Texts classified, by model.", ["model"], registry=self.registry
        )
        self.errors = Counter(
            "lmadapt_errors", "Refused or failed requests by error code.", ["code"], registry=self.registry
        )

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


@dataclass
class ServedModel:
    name: str
    run: Run
    predictor: Any
    batcher: MicroBatcher | None = None

    def info(self) -> ModelInfo:
        config = self.run.run_config
        return ModelInfo(
            name=self.name,
            strategy=config.strategy_name,
            backbone=str(config.model.backbone),
            task=self.run.labels.task,
            labels=list(self.run.labels.labels),
            backend=self.predictor.engine.name,
            test_accuracy=self.run.metrics.get("test", {}).get("accuracy"),
        )


def served_models(runs: Sequence[Run], settings: ServiceSettings, workers: int) -> dict[str, ServedModel]:
    """One predictor per run on the chosen backend, named by the run folder; names must differ."""
    from lmadapt.inference.engines import check_backend

    check_backend(settings.backend)
    models: dict[str, ServedModel] = {}
    for run in runs:
        if run.name in models:
            raise LmadaptError(
                f"two runs are both named '{run.name}'", fix="serve runs whose folders have different names"
            )
        # The batcher runs `workers` passes at once; each is one engine call on its share of the cores.
        predictor = run.inference(settings.backend, workers=1, batch_size=settings.max_batch, engine_workers=workers)
        run.check_reads([])  # loads the language guard's tokenizer now, not on the first request
        models[run.name] = ServedModel(run.name, run, predictor)
    return models


BODY_TOO_LARGE_FIX = "send fewer or shorter texts per request"
REQUEST_FIX = 'send {"model": "<name>", "texts": ["...", ...]} as JSON'


def malformed_json(what: str, fix: str = REQUEST_FIX) -> ApiError:
    return ApiError(400, "malformed_json", f"the request body {what}", fix)


def refuse_constant(name: str) -> NoReturn:
    raise malformed_json(f"has {name}, which JSON does not allow", fix=f"send null or a number instead of {name}")


def is_json(content_type: str) -> bool:
    """Whether a Content-Type declares JSON, by the rule FastAPI parses bodies by (application/json, */*+json)."""
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


class JsonRequest(Request):
    """A request whose body is JSON as RFC 8259 has it (UTF-8, no NaN or Infinity), else an ApiError."""

    async def json(self) -> Any:
        if not hasattr(self, "_strict_json"):
            try:
                text = (await self.body()).decode("utf-8-sig")  # RFC 8259 lets a parser skip a byte order mark
                self._strict_json = json.loads(text, parse_constant=refuse_constant)
            except UnicodeDecodeError as error:
                raise malformed_json(
                    f"is not UTF-8 (at byte offset {error.start}: {error.reason})", fix="encode the JSON as UTF-8"
                ) from None
            except json.JSONDecodeError as error:
                raise malformed_json(f"is not valid JSON: {error}") from None
            except RecursionError:
                raise malformed_json("nests lists or objects too deeply to parse") from None
        return self._strict_json


class JsonRoute(APIRoute):
    """A route that reads a request body only when it is declared and well-formed JSON: a 415 or 400 that says
    what is wrong, where FastAPI would answer a generic 400 or a misleading 422."""

    def get_route_handler(self):
        handle = super().get_route_handler()

        async def handle_json(request: Request) -> Response:
            request = JsonRequest(request.scope, request.receive)
            if self.body_field is not None and await request.body():
                content_type = request.headers.get("content-type")
                if not content_type or not is_json(content_type):
                    raise ApiError(
                        415,
                        "unsupported_media_type",
                        f"the request body is declared as {content_type}, not JSON"
                        if content_type
                        else "the request body has no Content-Type",
                        fix="send it as JSON with the header 'Content-Type: application/json'",
                    )
                await request.json()  # parsed now, so a malformed body gets its own error; FastAPI reuses it
            return await handle(request)

        return handle_json


class BodySizeLimit:
    """ASGI middleware: a request body over `limit` bytes, declared or streamed, gets 413."""

    def __init__(self, app, limit: int, on_refuse):
        self.app, self.limit, self.on_refuse = app, limit, on_refuse

    def too_large(self) -> ApiError:
        return ApiError(
            413, "body_too_large", f"the request body is larger than {self.limit} bytes", BODY_TOO_LARGE_FIX
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            self.on_refuse()
            return await error_response(self.too_large())(scope, receive, send)
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:  # a chunked body: the endpoint reading it gets a 413
                raise HTTPException(413, detail=self.too_large().message)
            return message

        await self.app(scope, counting_receive, send)


class ApiKeyCheck:
    """ASGI middleware: before anything else reads the request, one without the key gets 401 and learns nothing else."""

    def __init__(self, app, refusal, on_refuse):
        self.app, self.refusal, self.on_refuse = app, refusal, on_refuse

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in PUBLIC_PATHS:
            refusal = self.refusal(Request(scope))
            if refusal is not None:
                self.on_refuse(refusal.code)
                return await error_response(refusal)(scope, receive, send)
        await self.app(scope, receive, send)


class RequestMetrics:
    """ASGI middleware: counts requests by route and status and times them (plain ASGI: it costs little per call)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500  # an exception escaping the app becomes a 500

        async def noting_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        finally:
            route = scope.get("route")  # set by the router as it matched
            path = route.path if route is not None else "unmatched"
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)


def error_response(error: ApiError) -> JSONResponse:
    body = {"error": {"code": error.code, "message": error.message, "fix": error.fix}}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


PUBLIC_PATHS = {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}

ERROR_RESPONSES = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "Malformed JSON: not UTF-8, a syntax error, NaN or Infinity, nested too deeply.",
        401: "Missing or wrong API key.",
        404: "Unknown model.",
        413: "Request body too large.",
        415: "The body is not declared as JSON (Content-Type: application/json).",
        422: "Invalid request: too many texts, a text too long, empty or not Unicode, no model named, texts in a "
        "language the model's backbone cannot read.",
        504: "The prediction did not finish within the request timeout.",
    }.items()
}


def create_app(runs: Sequence[Run], settings: ServiceSettings | None = None) -> FastAPI:
    """The service over `runs` (loaded now, so a bad run fails before the server starts)."""
    settings = settings or ServiceSettings()
    if settings.api_key is not None and not settings.api_key.strip():
        raise LmadaptError("the API key is empty", fix="pass a non-empty --api-key, or none for a service without auth")
    workers = worker_count(settings.workers)
    models = served_models(runs, settings, workers)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import torch

        # `workers` forward passes run at once (of any model), each on its own cores: PyTorch must not
        # spread one pass over all of them.
        threads_before = torch.get_num_threads()
        torch.set_num_threads(threads_per_worker(workers))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lmadapt-pass") as executor:
            for served in models.values():
                served.batcher = MicroBatcher(
                    served.predictor.predict,
                    executor,
                    max_batch=settings.max_batch,
                    max_wait_s=settings.max_wait_ms / 1000,
                    max_delay_s=settings.max_delay_ms / 1000,
                    slots=workers,
                    on_batch=metrics.batch_size.labels(served.name).observe,
                )
                served.batcher.start()
            yield
            for served in models.values():
                await served.batcher.stop()
        torch.set_num_threads(threads_before)

    app = FastAPI(
        title="lmadapt",
        summary="Text classification with adapted language models.",
        description=__doc__,
        lifespan=lifespan,
        responses={401: ERROR_RESPONSES[401]} if settings.api_key else None,
    )
    app.router.route_class = JsonRoute

    bearer = HTTPBearer(auto_error=False, description="API key as a bearer token.")
    header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key.")

    def declare_key(_bearer=Depends(bearer), _header=Depends(header)) -> None:
        """Puts the two ways to send the key into the OpenAPI schema; the `authenticate` middleware checks it."""

    def key_refusal(request: Request) -> ApiError | None:
        # Any wrong credential refuses the request, even beside the right one; an Authorization header of
        # another scheme (e.g. a proxy's Basic) is not a credential for this service.
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        presented = [request.headers.get("x-api-key"), token.strip() if scheme.lower() == "bearer" else None]
        presented = [given for given in presented if given is not None]
        expected = settings.api_key.encode()
        if presented and all(secrets.compare_digest(given.encode(), expected) for given in presented):
            return None
        return ApiError(
            401,
            "unauthorized",
            "missing or wrong API key" if presented else "this service needs an API key",
            fix="send the key as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
            headers={"WWW-Authenticate": "Bearer"},
        )

    # The last added runs first: the request counter sees every refusal, and the key is checked before the body.
    app.add_middleware(
        BodySizeLimit, limit=settings.max_body_bytes, on_refuse=metrics.errors.labels("body_too_large").inc
    )
    if settings.api_key is not None:
        app.add_middleware(ApiKeyCheck, refusal=key_refusal, on_refuse=lambda code: metrics.errors.labels(code).inc())
    app.add_middleware(RequestMetrics, metrics=metrics)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        metrics.errors.labels(error.code).inc()
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        where = "; ".join(
            f"{'.'.join(str(p) for p in problem.get('loc', ())[1:]) or 'body'}: {problem.get('msg')}"
            for problem in error.errors()[:5]
        )
        return await api_error(request, ApiError(422, "invalid_request", where, fix=REQUEST_FIX))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(error.status_code, "http_error")
        fix = BODY_TOO_LARGE_FIX if error.status_code == 413 else None
        return await api_error(request, ApiError(error.status_code, code, str(error.detail), fix, error.headers))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception):
        return await api_error(request, ApiError(500, "internal", f"{type(error).__name__}: {error}"))

    def choose_model(name: str | None) -> ServedModel:
        if name is None:
            if len(models) == 1:
                return next(iter(models.values()))
            raise ApiError(
                422,
                "model_required",
                "several models are served: name one",
                fix=f"set model to one of {sorted(models)}",
            )
        if name not in models:
            raise ApiError(
                404, "unknown_model", f"no model named '{name}'", fix=f"use one of {sorted(models)} (GET /v1/models)"
            )
        return models[name]

    def check_texts(texts: list[str]) -> None:
        if not texts:
            raise ApiError(422, "no_texts", "texts is empty", fix="send at least one text")
        if len(texts) > settings.max_texts:
            raise ApiError(
                422,
                "too_many_texts",
                f"{len(texts)} texts in one request; the limit is {settings.max_texts}",
                fix="split the texts over several requests",
            )
        for i, text in enumerate(texts):
            if not text.strip():
                raise ApiError(422, "empty_text", f"text {i} is empty", fix="send non-empty texts")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate escape such as "\ud800": no tokenizer reads it
                raise ApiError(
                    422, "invalid_text", f"text {i} is not valid Unicode (a lone surrogate)", fix="send UTF-8 text"
                ) from None
            if len(text) > settings.max_chars:
                raise ApiError(
                    422,
                    "text_too_long",
                    f"text {i} has {len(text)} characters; the limit is {settings.max_chars}",
                    fix="shorten or split the text",
                )

    protected = [Depends(declare_key)] if settings.api_key else []  # no key: no security scheme in the schema

    async def predict(request) -> Response:
        """Labels and per-label scores for each text; concurrent requests share forward passes."""
        served = choose_model(request.model)
        check_texts(request.texts)
        try:
            served.run.check_reads(request.texts, where="texts")
        except LmadaptError as error:
            raise ApiError(422, "unreadable_texts", error.what, fix=error.fix) from None
        try:
            results = await asyncio.wait_for(served.batcher.predict(request.texts), settings.timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(
                504,
                "timeout",
                f"the prediction took longer than {settings.timeout_s:g} s",
                fix="send fewer texts per request, or retry when the service is less busy",
            ) from None
        metrics.texts.labels(served.name).inc(len(results))
        answer = PredictResponse(model=served.name, predictions=[Prediction(**result) for result in results])
        # Serialized by pydantic directly: FastAPI would validate and encode it again (costly per request).
        return Response(answer.model_dump_json(), media_type="application/json")

    # The request's type is built for this service's limits, so it is set here, not in a (string) annotation.
    predict.__annotations__["request"] = request_model(settings)
    app.post("/v1/predict", response_model=PredictResponse, responses=ERROR_RESPONSES, dependencies=protected)(predict)

    @app.get("/v1/models", response_model=list[ModelInfo], dependencies=protected)
    async def list_models() -> list[ModelInfo]:
        """The models this service classifies with."""
        return [served.info() for served in models.values()]

    @app.get("/healthz", dependencies=protected)
    async def healthz() -> dict:
        """Liveness: the service is up, its models are loaded and their batchers run (else 503)."""
        stopped = [served.name for served in models.values() if served.batcher is None or not served.batcher.running]
        if stopped:
            raise ApiError(503, "not_ready", f"no batcher runs for {', '.join(stopped)}", fix="restart the service")
        return {"status": "ok", "models": len(models)}

    @app.get("/metrics", dependencies=protected, response_class=Response)
    async def prometheus_metrics() -> Response:
        """Counters and histograms in the Prometheus text format."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


def serve_forever(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, shutdown_timeout_s: float = 30.0) -> None:
    """Run the service until SIGINT or SIGTERM; requests in flight then get `shutdown_timeout_s` to finish,
    and the call returns (uvicorn re-raises the signal it stopped on: a stop it handled is a clean exit)."""
    import signal

    import uvicorn

    if not MIN_PORT <= port <= MAX_PORT:
        raise LmadaptError(
            f"port {port} is out of range", where="port", fix=f"use a port from {MIN_PORT} to {MAX_PORT}"
        )
    config = uvicorn.Config(app, host=host, port=port, timeout_graceful_shutdown=shutdown_timeout_s, lifespan="on")
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.Server(config).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def wait_until_serving(url: str, process=None, timeout_s: float = 120.0) -> None:
    """Return once the service at `url` answers /healthz (any status: with a key set it says 401); raise
    RuntimeError if `process` (its subprocess.Popen) exits first or `timeout_s` passes."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
                raise RuntimeError(f"the service at {url} did not start") from None
            time.sleep(0.2)
