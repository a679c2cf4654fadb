"""The service's refusals: ApiError, its JSON body {"error": {"code", "message", "fix"}}, and the exception
handlers that turn every error of any route (an application's included) into that body, counted in /metrics."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmadapt.serving.metrics import Metrics


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


BODY_TOO_LARGE_FIX = "send fewer or shorter texts per request"
REQUEST_FIX = 'send {"model": "<name>", "texts": ["...", ...]} as JSON'

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


def error_response(error: ApiError) -> JSONResponse:
    body = {"error": {"code": error.code, "message": error.message, "fix": error.fix}}
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def add_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    """Every error `app` raises, FastAPI's and Starlette's included, answered as an ErrorBody and counted."""

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
