"""Connection limits uvicorn does not enforce: header deadline, header size, connection cap.

What uvicorn (0.54) itself enforces, read from its protocol code: ``timeout_keep_alive`` closes a
connection idle *between* requests, armed only after a response and disarmed by any byte, so a
client that connects and sends nothing, or half a request line, is never timed out;
``limit_concurrency`` answers 503 once too many connections or tasks exist, but only when a
request's headers are complete, so stalled connections are still held (one file descriptor
each); h11 caps a request head at 16 KiB, httptools has no cap. There are no header or body read
deadlines.

:func:`guarded_protocol` adds to uvicorn's HTTP protocol class:

* a header deadline: a connection must deliver a complete request head within
  ``header_timeout`` seconds of connecting, or of the first byte after an idle keep-alive pause;
  otherwise it gets a 408 and is closed;
* a header size cap: more than ``max_header_bytes`` bytes without a complete head is a 431;
* a connection cap: beyond ``max_connections`` open connections, a new one gets a 503 at once and
  is closed, so stalled clients cannot exhaust file descriptors;
* one ``send()`` per response: uvicorn writes a response's head and body separately, two
  syscalls and two wake-ups of the client (about 0.1 ms of a 1 ms request), see
  :class:`CoalescingTransport`.

The body deadline is the app's (:mod:`pipeline.serving.app`), and the idle timeout is uvicorn's
``timeout_keep_alive``. The subclass reads one piece of uvicorn's state, ``self.cycle`` (the
request being answered, set once a head is parsed), and extends one of its methods,
``on_response_complete`` (to send a finished response at once); both its h11 and httptools
protocols have them. The tests run it over real sockets.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Coroutine

import orjson

log = logging.getLogger("pipeline.serving")

_REASONS = {
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


@dataclasses.dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0
    max_header_bytes: int = 64 * 1024
    max_connections: int = 1000


def base_protocol() -> type[asyncio.Protocol]:
    """uvicorn's fastest available HTTP protocol: httptools if installed, else h11."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return AutoHTTPProtocol


AnswerNow = Callable[[dict, bytes], "tuple[dict, dict] | None"]


def guarded_protocol(
    limits: ConnectionLimits,
    base: type[asyncio.Protocol] | None = None,
    answer_now: AnswerNow | None = None,
) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's HTTP protocol (``base``) that enforces ``limits``.

    With ``answer_now`` (``ServingApp.answer_now``) and uvicorn's httptools protocol, a request
    whose head and body arrive in one read is answered before the read returns, see
    :meth:`on_message_complete`.
    """
    base = base or base_protocol()
    in_place = answer_now if hasattr(base, "_start_asgi_task") else None

    class GuardedProtocol(base):  # type: ignore[misc, valid-type]
        _limits = limits
        _deferred: tuple | None = None  # (cycle, app) of a head parsed in this read
        _reading = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self._refused = len(self.connections) >= self._limits.max_connections
            self._header_timer: asyncio.TimerHandle | None = None
            self._header_bytes = 0
            if self._refused:
                log.warning("refused a connection: %d open", len(self.connections))
                _reply_and_close(transport, 503, "too many open connections; retry later")
                return
            super().connection_made(CoalescingTransport(transport, self.loop))
            self._arm_header_timer()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if not self._answering() and self._header_timer is None:
                self._arm_header_timer()  # the first byte after a keep-alive pause
            cycle = getattr(self, "cycle", None)
            self._reading = True
            try:
                super().data_received(data)
            finally:
                self._reading = False
                if self._deferred is not None:  # the body is still coming: the ASGI task reads it
                    super()._start_asgi_task(*self._deferred)
                    self._deferred = None
            if self._answering() or getattr(self, "cycle", None) is not cycle:
                self._disarm_header_timer()
                self._header_bytes = 0
            elif self.transport is not None and not self.transport.is_closing():
                self._header_bytes += len(data)
                if self._header_bytes > self._limits.max_header_bytes:
                    limit = self._limits.max_header_bytes
                    self._close_with(431, f"request head exceeds {limit} bytes")

        def _start_asgi_task(self, cycle, app) -> None:  # uvicorn: a request head is parsed
            if self._reading and in_place is not None:
                self._deferred = (cycle, app)  # answered in place if its body is here too
            else:
                super()._start_asgi_task(cycle, app)

        def on_message_complete(self) -> None:
            """The request's body is complete: answer a small one now, without the ASGI task.

            The response goes through the cycle's own ``send`` (uvicorn's status line, headers,
            keep-alive and pipelining), driven to its end here: it does not wait while the
            transport accepts writes.
            """
            super().on_message_complete()
            deferred, self._deferred = self._deferred, None
            if deferred is None:
                return
            cycle, app = deferred
            messages = None
            if not (cycle.flow.write_paused or cycle.response_started or cycle.disconnected):
                messages = in_place(cycle.scope, bytes(cycle.body))
            if messages is None:
                super()._start_asgi_task(cycle, app)
                return
            for message in messages:
                _run_to_end(cycle.send(message))

        def on_response_complete(self) -> None:
            """The response's last byte is written: send it now, not one loop step later."""
            if isinstance(self.transport, CoalescingTransport):
                self.transport.flush()
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_timer()
            if not self._refused:
                super().connection_lost(exc)

        def _answering(self) -> bool:
            """A request head is parsed and its response is not finished."""
            cycle = getattr(self, "cycle", None)
            return cycle is not None and not cycle.response_complete

        def _arm_header_timer(self) -> None:
            self._header_timer = self.loop.call_later(
                self._limits.header_timeout, self._header_deadline
            )

        def _disarm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_deadline(self) -> None:
            self._header_timer = None
            if not self._answering():
                timeout = self._limits.header_timeout
                self._close_with(408, f"request head not received within {timeout:g} s")

        def _close_with(self, status: int, message: str) -> None:
            self._disarm_header_timer()
            _reply_and_close(self.transport, status, message)

    return GuardedProtocol


class CoalescingTransport:
    """A transport whose writes in one event-loop step leave as one ``send()``.

    The first write of a step schedules a flush for right after it (``call_soon``); the head
    and body of a response, written in the same step, go out together. The protocol flushes as
    soon as a response is complete, and closing flushes first. Everything else is the wrapped
    transport's.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


def _run_to_end(coroutine: Coroutine) -> None:
    """Run a coroutine that does not wait (uvicorn's ``send`` on a writable transport)."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise RuntimeError("a response write had to wait for the transport")


def _reply_and_close(transport: asyncio.Transport, status: int, message: str) -> None:
    body = orjson.dumps({"error": message})
    head = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])
    head += b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
    head += b"connection: close\r\n\r\n"
    if not transport.is_closing():
        transport.write(head + body)
        transport.close()
