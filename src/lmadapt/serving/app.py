"""The REST service: FastAPI over one or more run folders, micro-batched, with limits, auth and metrics.

    POST /v1/predict   {"model": name, "texts": [...]} -> a label and per-label scores per text
    GET  /v1/models    the models served, their labels and inference backend
    GET  /healthz      liveness
    GET  /metrics      Prometheus text format: requests, latency, batch sizes, errors
    GET  /docs         OpenAPI documentation (/openapi.json: the schema)

Every error is a JSON body {"error": {"code", "message", "fix"}} with a 4xx status (504 on timeout).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.routing import APIRoute

from lmadapt.errors import LmadaptError
from lmadapt.runs import Run
from lmadapt.serving.errors import ERROR_RESPONSES
from lmadapt.serving.metrics import Metrics
from lmadapt.serving.middleware import JsonRoute, key_dependencies, protect
from lmadapt.serving.pool import ModelPool, Reader
from lmadapt.serving.routes import health_router, model_router
from lmadapt.serving.settings import MAX_PORT, MIN_PORT, ServiceSettings


def check_routes(routers: Sequence[APIRouter]) -> None:
    """An application's routes read bodies as the service's own do; a route that does not is a mistake in
    the application's code, not a user's (so a TypeError, not an LmadaptError)."""
    plain = [
        route.path
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute) and not isinstance(route, JsonRoute)
    ]
    if plain:
        raise TypeError(
            f"the routes {plain} do not read JSON bodies as the service does: build them on a ServiceRouter"
        )


def create_app(
    runs: Sequence[Run],
    settings: ServiceSettings | None = None,
    routers: Sequence[APIRouter] = (),
    readers: Mapping[str, Reader] | None = None,
    pages: Mapping[str, str] | None = None,
    assets: Mapping[str, Path] | None = None,
) -> FastAPI:
    """The service over `runs` (loaded now, so a bad run fails before the server starts), with an
    application's `routers` (each a ServiceRouter) beside its own routes. Every route gets the API key check,
    the body-size limit, the request metrics and the JSON error bodies; an application's route reaches the
    model pool (app.state.pool) through the `Pool` dependency of lmadapt.serving.routes, and the pool's
    `hooks` post-process or observe every prediction. `readers` (name -> texts -> results) are micro-batched
    by the pool (`pool.read(name, texts)`); `pages` (path -> HTML) are served without the key check: they hold
    no data, and ask for the key to call the API with; so are `assets` (path -> a file the pages load, such as a
    script: a page cannot send the key with a script it loads)."""
    settings = settings or ServiceSettings()
    check_routes(routers)
    if settings.api_key is not None and not settings.api_key.strip():
        raise LmadaptError("the API key is empty", fix="pass a non-empty --api-key, or none for a service without auth")
    metrics = Metrics()
    pool = ModelPool(runs, settings, metrics, readers)
    app = FastAPI(
        title="lmadapt",
        summary="Text classification with adapted language models.",
        description=__doc__,
        lifespan=lambda _app: pool.serving(),
        responses={401: ERROR_RESPONSES[401]} if settings.api_key else None,
    )
    app.state.pool = pool
    protect(app, settings, metrics, pages=[*(pages or {}), *(assets or {})])
    for path, html in (pages or {}).items():
        app.add_api_route(path, page_route(html), methods=["GET"], response_class=HTMLResponse, include_in_schema=False)
    for path, file in (assets or {}).items():
        app.add_api_route(path, asset_route(Path(file)), methods=["GET"], include_in_schema=False)
    app.include_router(model_router(pool, settings))
    app.include_router(health_router(pool, settings))
    for router in routers:
        app.include_router(router, dependencies=key_dependencies(settings))
    return app


def page_route(html: str):
    async def page() -> HTMLResponse:
        return HTMLResponse(html)

    return page


def asset_route(file: Path):
    async def asset() -> FileResponse:
        return FileResponse(file)  # its media type from its name; cached by the browser with its ETag

    return asset


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
