"""Hostile connections against a real server on loopback: stalled, slow, oversized, too many.

The server runs with short limits so the test takes seconds; it counts its own file descriptors
through /proc, the resource a stalled client used to pin forever.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
from collections.abc import Iterator

import pytest

from tests.serving_client import MODEL, Client, running_server, wait_for, write_toy_export

pytestmark = pytest.mark.slow

TIMEOUT = 2.0  # header, body and idle timeouts of the server under test
MAX_CONNECTIONS = 12
PREDICT = f"/v1/models/{MODEL}:predict"
BODY = json.dumps({"instances": [{"fare": 2.0}]}).encode()
REQUEST = (
    b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n" % len(BODY)
) + BODY


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[Client]:
    root = tmp_path_factory.mktemp("limits")
    base = write_toy_export(root / "base")
    limits = [
        *("--header-timeout", str(TIMEOUT), "--body-timeout", str(TIMEOUT)),
        *("--idle-timeout", str(TIMEOUT), "--max-connections", str(MAX_CONNECTIONS)),
        *("--max-header-bytes", "8192"),
    ]
    with running_server(base, root, *limits) as running:
        yield running


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        with contextlib.suppress(OSError):
            sock.close()


def connect(client: Client, opened: list[socket.socket], first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", client.port), timeout=30)
    opened.append(sock)
    if first:
        sock.sendall(first)
    return sock


def read_until_closed(sock: socket.socket, timeout: float = 30.0) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout)
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def error_of(answer: bytes) -> str:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]


def predict_ok(client: Client) -> bool:
    status, body = client.post(PREDICT, {"instances": [{"fare": 2.0}]})
    return status == 200 and body["predictions"][0]["predictions"] == 4.0


def quiet_files(client: Client) -> int:
    """The server's descriptors once no connection is open (the last close is asynchronous)."""
    previous = -1
    while (files := client.open_files()) != previous:
        previous = files
        time.sleep(0.5)
    return files


def settle(client: Client, files: int) -> None:
    """Wait until the server holds ``files`` descriptors (accepts and closes are asynchronous)."""
    wait_for(lambda: client.open_files() == files, timeout=30, what=f"{files} open files")


def test_stalled_connections_are_closed_after_their_timeouts(client, sockets):
    baseline = quiet_files(client)
    started = time.monotonic()
    silent = [connect(client, sockets) for _ in range(3)]
    half_head = [connect(client, sockets, REQUEST[:30]) for _ in range(3)]
    half_body = [connect(client, sockets, REQUEST[: len(REQUEST) - 10]) for _ in range(3)]
    settle(client, baseline + 9)
    assert predict_ok(client)  # while nine are stalled, a normal request still works
    for sock in silent + half_head:
        answer = read_until_closed(sock)
        assert status_of(answer) == 408, answer
        assert error_of(answer) == f"request head not received within {TIMEOUT:g} s"
    for sock in half_body:
        answer = read_until_closed(sock)
        assert status_of(answer) == 408, answer
        assert error_of(answer).startswith(f"request body not received within {TIMEOUT:g} s")
    assert TIMEOUT <= time.monotonic() - started < TIMEOUT + 15
    settle(client, baseline)


def test_a_trickled_body_cannot_outlast_the_body_timeout(client, sockets):
    """A deadline for the whole body, not per read: one byte every half second is too slow."""
    sock = connect(client, sockets, REQUEST[: len(REQUEST) - len(BODY)])
    started = time.monotonic()
    for byte in BODY[:-1]:
        if select.select([sock], [], [], 0.5)[0]:  # the answer came: stop sending
            break
        sock.sendall(bytes([byte]))
    answer = read_until_closed(sock)
    assert status_of(answer) == 408 and "request body" in error_of(answer)
    assert TIMEOUT <= time.monotonic() - started < TIMEOUT + 15


def test_idle_keep_alive_connections_are_closed(client, sockets):
    sock = connect(client, sockets, REQUEST)
    sock.settimeout(30)
    first = sock.recv(65536)
    assert status_of(first) == 200
    idle_since = time.monotonic()
    assert read_until_closed(sock) == b""  # no answer, just the close
    assert TIMEOUT * 0.9 < time.monotonic() - idle_since < TIMEOUT + 15


def test_an_endless_request_head_is_a_431(client, sockets):
    head = b"GET /v1/models/taxi HTTP/1.1\r\n" + b"X-Padding: " + b"x" * 9000 + b"\r\n"
    answer = read_until_closed(connect(client, sockets, head))
    assert status_of(answer) == 431, answer
    assert error_of(answer) == "request head exceeds 8192 bytes"


def test_the_connection_cap_refuses_extra_connections(client, sockets):
    """200 more clients connect to a server holding stalled ones: it keeps at most the cap
    (the rest get a 503 at once), answers requests on a free slot, and is back to its own
    descriptors after the timeout."""
    baseline = quiet_files(client)
    held = [connect(client, sockets, REQUEST[:30]) for _ in range(MAX_CONNECTIONS - 1)]
    settle(client, baseline + MAX_CONNECTIONS - 1)
    assert predict_ok(client)  # the last free slot serves a normal request
    extra = [connect(client, sockets) for _ in range(200)]
    answers = [read_until_closed(sock) for sock in extra]
    refused = [a for a in answers if status_of(a) == 503]
    assert len(refused) >= 200 - 1, [a[:40] for a in answers if status_of(a) != 503]
    assert {error_of(a) for a in refused} == {"too many open connections; retry later"}
    assert client.open_files() <= baseline + MAX_CONNECTIONS
    for sock in held:
        assert status_of(read_until_closed(sock)) == 408
    settle(client, baseline)
    assert predict_ok(client)


def responses(sock: socket.socket, count: int) -> list[bytes]:
    """``count`` whole responses read off a keep-alive connection (framed by content-length)."""
    sock.settimeout(30)
    received, answers = b"", []
    while len(answers) < count:
        head, separator, rest = received.partition(b"\r\n\r\n")
        if separator:
            length = int(
                next(
                    line.split(b":", 1)[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
            )
            if len(rest) >= length:
                answers.append(head + separator + rest[:length])
                received = rest[length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(answers)} of {count} responses"
        received += chunk
    return answers


def without_date(answer: bytes) -> bytes:
    return b"\r\n".join(line for line in answer.split(b"\r\n") if not line.startswith(b"date:"))


def test_requests_answered_in_place_and_through_the_asgi_task_are_the_same(client, sockets):
    """A request that arrives whole is answered before the server's read returns; one whose
    body comes later goes through the ASGI task. Both answer alike, pipelined requests keep
    their order, and hundreds of requests on one connection never add up to a 431."""
    status = b"GET /v1/models/" + MODEL.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    bad = REQUEST.replace(b'"fare"', b'"nope"')
    whole = connect(client, sockets)
    whole.sendall(REQUEST + bad + status)  # three pipelined requests in one write
    in_place = responses(whole, 3)
    split = connect(client, sockets)
    through_task = []
    for request in (REQUEST, bad):
        head, body = request.split(b"\r\n\r\n", 1)
        split.sendall(head + b"\r\n\r\n")
        time.sleep(0.2)  # the head is read alone: the ASGI task waits for the body
        split.sendall(body)
        through_task += responses(split, 1)
    split.sendall(status)
    through_task += responses(split, 1)
    assert [without_date(a) for a in in_place] == [without_date(a) for a in through_task]
    assert [status_of(a) for a in in_place] == [200, 400, 200]
    assert "nope" in error_of(in_place[1])
    for _ in range(300):  # 300 x ~150 bytes of heads, far past the 8192-byte head limit
        whole.sendall(REQUEST)
        assert status_of(responses(whole, 1)[0]) == 200
