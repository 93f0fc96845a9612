"""The ASGI app: TensorFlow Serving's REST paths routed to :class:`ServingService`.

Paths are matched with TF Serving's own patterns (``http_rest_api_util.cc``), case-insensitive:

* ``POST /v1/models/<name>[/versions/<N>|/labels/<label>]:(predict|classify|regress)``
* ``GET /v1/models/<name>[/versions/<N>|/labels/<label>][/metadata]``

Any other ``/v1/`` request is TF Serving's 400 ``Malformed request: <method> <path>``; anything
outside ``/v1/`` is a 404. Every error body is ``{"error": "..."}``; a 5xx means a server fault,
never bad client input, and no request can stop the server.

Bodies are read with a size cap (413) and a deadline for the whole body (408, ``--body-timeout``);
both close the connection. A request whose body is small (one to a few dozen rows) is answered in
the event loop: its model call takes well under a millisecond, less than a hop to a worker
thread and back costs. Larger ones run in worker threads, so the loop keeps serving others. A
small request that arrives whole in one read (the usual case) is answered by
:meth:`ServingApp.answer_now` before the ASGI task would even start; the answer is the same.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from urllib.parse import unquote

import orjson

from pipeline.serving.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    ServingError,
)
from pipeline.serving.service import ServingService

log = logging.getLogger("pipeline.serving")

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_BODY_TIMEOUT = 30.0
INLINE_BODY_BYTES = 16 * 1024  # bench/serving_latency.py: ~30 JSON rows, ~1 ms of model time

_FLAGS = re.IGNORECASE | re.ASCII
_V1 = re.compile(r"/v1/.*", _FLAGS | re.DOTALL)
_POST = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    _FLAGS,
)
_GET = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    _FLAGS,
)
_JSON = [(b"content-type", b"application/json")]


class ClientGone(Exception):
    """The client disconnected before sending the whole body: nobody reads an answer."""


class ServingApp:
    """ASGI 3 application; with ``poll_seconds`` it polls the model base while it runs."""

    def __init__(
        self,
        service: ServingService,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        poll_seconds: float | None = None,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        inline_body_bytes: int = INLINE_BODY_BYTES,
    ) -> None:
        self.service = service
        self.max_body_bytes = max_body_bytes
        self.poll_seconds = poll_seconds
        self.body_timeout = body_timeout
        self.inline_body_bytes = inline_body_bytes
        self._methods = {
            "predict": service.predict,
            "classify": service.classify,
            "regress": service.regress,
        }

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    # ---- lifespan ------------------------------------------------------------------------------

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.get_running_loop().run_in_executor(None, self.stop)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def start(self) -> None:
        if self.poll_seconds:
            self.service.registry.start(self.poll_seconds)
        if self.service.request_log is not None:
            self.service.request_log.start()

    def stop(self) -> None:
        self.service.registry.stop()
        if self.service.request_log is not None:
            self.service.request_log.close()

    # ---- requests ------------------------------------------------------------------------------

    async def _http(self, scope: dict, receive: Callable, send: Callable) -> None:
        method, path = _method_and_path(scope)
        try:
            status, body, close = 200, await self._route(method, path, scope, receive), False
        except ClientGone:
            return
        except Exception as error:
            status, body, close = _failure(method, path, error)
        for message in _response(status, body, close):
            await send(message)

    def answer_now(self, scope: dict, body: bytes) -> tuple[dict, dict] | None:
        """The response messages to a request whose whole ``body`` has arrived, if it is small.

        The connection protocol (:mod:`pipeline.serving.connections`) asks this before it starts
        the ASGI task: a small request is answered right here, without the task and the body
        wait (about 0.1 ms of a 1 ms request). None: take the ASGI path.
        """
        if len(body) > self.inline_body_bytes or scope["method"] not in ("GET", "POST"):
            return None
        method, path = _method_and_path(scope)
        try:
            status, result, close = 200, self._answer(method, path, body), False
        except Exception as error:
            status, result, close = _failure(method, path, error)
        return _response(status, result, close)

    async def _route(self, method: str, path: str, scope: dict, receive: Callable) -> bytes:
        if method == "POST" and self._handler(path) is not None:
            body = await self._read_body(scope, receive)
            if len(body) <= self.inline_body_bytes:
                return self._answer(method, path, body)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, self._answer, method, path, body)
        return self._answer(method, path, b"")

    def _handler(self, path: str) -> Callable | None:
        match = _POST.fullmatch(path)
        # TF Serving matches ":PREDICT" too, then finds no handler for it
        return None if match is None else self._methods.get(match.group(4))

    def _answer(self, method: str, path: str, body: bytes) -> bytes:
        """The response body of a request (its whole body read); errors raise."""
        if not _V1.fullmatch(path):
            raise NotFound(f"Not found: {method} {path}; the API is under /v1/models/")
        if method == "POST" and (match := _POST.fullmatch(path)):
            name, version, label, api = match.groups()
            handler = self._methods.get(api)
            if handler is not None:
                return handler(unquote(name), version, body, _label(label))
        elif method == "GET" and (match := _GET.fullmatch(path)):
            name, version, label, metadata = match.groups()
            if not name:
                raise BadRequest("Missing model name in request.")
            if metadata:
                return self.service.metadata(unquote(name), version, _label(label))
            return self.service.status(unquote(name), version, _label(label))
        raise BadRequest(f"Malformed request: {method} {path}")

    async def _read_body(self, scope: dict, receive: Callable) -> bytes:
        """The whole body within ``body_timeout`` seconds and ``max_body_bytes`` bytes."""
        limit = self.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                size = int(value)
                raise PayloadTooLarge(
                    f"request body of {size} bytes exceeds the {limit} byte limit"
                )
        chunks, size = [], 0
        deadline = asyncio.get_running_loop().time() + self.body_timeout
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ClientGone
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise PayloadTooLarge(f"request body exceeds the {limit} byte limit")
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise RequestTimeout(
                f"request body not received within {self.body_timeout:g} s ({size} bytes came)"
            ) from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _method_and_path(scope: dict) -> tuple[str, str]:
    path = scope.get("raw_path") or scope["path"].encode()
    return scope["method"], path.decode("latin-1")


def _failure(method: str, path: str, error: Exception) -> tuple[int, bytes, bool]:
    """(status, body, close the connection) for a request that raised ``error``."""
    if isinstance(error, ServingError):
        close = isinstance(error, PayloadTooLarge | RequestTimeout)
        return error.status, _error_body(str(error)), close
    log.exception("%s %s failed", method, path, exc_info=error)  # a server fault: keep serving
    return 500, _error_body(f"internal error: {type(error).__name__}: {error}"), False


def _response(status: int, body: bytes, close: bool) -> tuple[dict, dict]:
    """The two ASGI messages of a response."""
    headers = [*_JSON, (b"content-length", str(len(body)).encode())]
    if close:  # the rest of the body is not read: this connection cannot carry another
        headers.append((b"connection", b"close"))
    start = {"type": "http.response.start", "status": status, "headers": headers}
    return start, {"type": "http.response.body", "body": body}


def _label(label: str | None) -> str | None:
    return None if label is None else unquote(label)


def _error_body(message: str) -> bytes:
    """``{"error": message}``; a message quoting a client's lone surrogate is escaped, not a 500."""
    try:
        return orjson.dumps({"error": message})
    except TypeError:
        return json.dumps({"error": message}).encode()


def create_app(
    service: ServingService,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    poll_seconds: float | None = None,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
) -> ServingApp:
    """The REST app; with ``poll_seconds`` it polls the model base while it runs."""
    return ServingApp(service, max_body_bytes, poll_seconds, body_timeout)
