"""FastAPI routes with TensorFlow Serving's REST paths, so TF Serving clients work unchanged.

Every error is ``{"error": "..."}`` with a 4xx status (5xx only for a server fault), and no
request can stop the server. Bodies are read with a size cap before anything is parsed; model
calls run in the worker thread pool so the event loop keeps accepting connections.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from pipeline.serving.errors import PayloadTooLarge, ServingError
from pipeline.serving.protocol import dumps
from pipeline.serving.service import ServingService

log = logging.getLogger("pipeline.serve")

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(dumps(payload), status_code=status, media_type="application/json")


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes without buffering it."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the {limit} byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the {limit} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def _answer(call: Callable[[], dict[str, Any]]) -> Response:
    """Run ``call`` in the thread pool and turn its result or error into a JSON response."""
    try:
        return json_response(await run_in_threadpool(call))
    except ServingError as error:
        return error_response(error.status, str(error))
    except Exception as error:  # a server fault: report it, keep serving
        log.exception("request failed")
        return error_response(500, f"internal error: {type(error).__name__}: {error}")


def create_app(
    service: ServingService,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    poll_seconds: float | None = None,
) -> FastAPI:
    """The REST app; with ``poll_seconds`` it polls the model base while it runs."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if poll_seconds:
            service.registry.start(poll_seconds)
        if service.request_log is not None:
            service.request_log.start()
        try:
            yield
        finally:
            service.registry.stop()
            if service.request_log is not None:
                service.request_log.close()

    app = FastAPI(
        title="pipeline.serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> Response:
        return error_response(error.status_code, str(error.detail))

    async def body_or_error(request: Request) -> bytes | Response:
        try:
            return await read_body(request, max_body_bytes)
        except PayloadTooLarge as error:
            return error_response(error.status, str(error))
        except ClientDisconnect:  # nobody will read the answer; keep it out of the error log
            return error_response(400, "client disconnected before sending the whole body")

    @app.get("/v1/models/{name}")
    async def status(name: str) -> Response:
        return await _answer(lambda: service.status(name))

    @app.get("/v1/models/{name}/versions/{version}")
    async def version_status(name: str, version: str) -> Response:
        return await _answer(lambda: service.status(name, version))

    @app.get("/v1/models/{name}/metadata")
    async def metadata(name: str) -> Response:
        return await _answer(lambda: service.metadata(name))

    @app.get("/v1/models/{name}/versions/{version}/metadata")
    async def version_metadata(name: str, version: str) -> Response:
        return await _answer(lambda: service.metadata(name, version))

    async def run(method: Callable, request: Request, name: str, version: str | None) -> Response:
        body = await body_or_error(request)
        if isinstance(body, Response):
            return body
        return await _answer(lambda: method(name, version, body))

    @app.post("/v1/models/{name}:predict")
    async def predict(request: Request, name: str) -> Response:
        return await run(service.predict, request, name, None)

    @app.post("/v1/models/{name}/versions/{version}:predict")
    async def version_predict(request: Request, name: str, version: str) -> Response:
        return await run(service.predict, request, name, version)

    @app.post("/v1/models/{name}:classify")
    async def classify(request: Request, name: str) -> Response:
        return await run(service.classify, request, name, None)

    @app.post("/v1/models/{name}/versions/{version}:classify")
    async def version_classify(request: Request, name: str, version: str) -> Response:
        return await run(service.classify, request, name, version)

    return app
