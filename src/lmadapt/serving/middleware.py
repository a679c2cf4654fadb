"""What the service applies to every route, an application's included: the API key, the body-size limit,
request metrics, strict JSON bodies (JsonRoute) and the JSON error bodies (`protect`)."""

from __future__ import annotations

import email.message
import json
import secrets
import time
from collections.abc import Iterable
from typing import Any, NoReturn

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPBearer

from lmadapt.serving.errors import BODY_TOO_LARGE_FIX, REQUEST_FIX, ApiError, add_error_handlers, error_response
from lmadapt.serving.metrics import Metrics
from lmadapt.serving.settings import ServiceSettings

PUBLIC_PATHS = {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


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

    def __init__(self, app, refusal, on_refuse, public: frozenset[str] = frozenset(PUBLIC_PATHS)):
        self.app, self.refusal, self.on_refuse, self.public = app, refusal, on_refuse, public

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in self.public:
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


def key_refusal(api_key: str):
    """The check of a request's credentials against `api_key`: None when it may pass, else its 401."""
    expected = api_key.encode()

    def refusal(request: Request) -> ApiError | None:
        # Any wrong credential refuses the request, even beside the right one; an Authorization header of
        # another scheme (e.g. a proxy's Basic) is not a credential for this service.
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        presented = [request.headers.get("x-api-key"), token.strip() if scheme.lower() == "bearer" else None]
        presented = [given for given in presented if given is not None]
        if presented and all(secrets.compare_digest(given.encode(), expected) for given in presented):
            return None
        return ApiError(
            401,
            "unauthorized",
            "missing or wrong API key" if presented else "this service needs an API key",
            fix="send the key as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
            headers={"WWW-Authenticate": "Bearer"},
        )

    return refusal


bearer = HTTPBearer(auto_error=False, description="API key as a bearer token.")
header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key.")


def declare_key(_bearer=Depends(bearer), _header=Depends(header)) -> None:
    """Puts the two ways to send the key into the OpenAPI schema; the ApiKeyCheck middleware checks it."""


def key_dependencies(settings: ServiceSettings) -> list:
    """The dependencies every protected route carries: with no key, none (no security scheme in the schema)."""
    return [Depends(declare_key)] if settings.api_key else []


def protect(app: FastAPI, settings: ServiceSettings, metrics: Metrics, pages: Iterable[str] = ()) -> None:
    """The key check (not on the documentation and the `pages`, which hold no data), body-size limit, request
    metrics and JSON error bodies on every route of `app`."""
    # The last added runs first: the request counter sees every refusal, and the key is checked before the body.
    app.add_middleware(
        BodySizeLimit, limit=settings.max_body_bytes, on_refuse=metrics.errors.labels("body_too_large").inc
    )
    if settings.api_key is not None:
        app.add_middleware(
            ApiKeyCheck,
            refusal=key_refusal(settings.api_key),
            on_refuse=lambda code: metrics.errors.labels(code).inc(),
            public=frozenset(PUBLIC_PATHS | set(pages)),
        )
    app.add_middleware(RequestMetrics, metrics=metrics)
    add_error_handlers(app, metrics)
