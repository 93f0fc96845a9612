"""Serving latency in one run: the SavedModel signature call alone vs the in-process handler vs
HTTP on loopback (p50 / p99), and throughput at concurrency 8, as ratios to the signature call.

    .venv/bin/python bench/serving_latency.py --model-base runs/LATEST/serving/<model> \\
        [--split-dir runs/LATEST/splits/eval] [--requests 3000] [--rounds 6] \\
        [--concurrency 8 --concurrent-seconds 10]

Baselines: ``signature_call`` is TensorFlow's own keyword call of the export's
``serving_default`` on one serialized example (what any Python client of the SavedModel pays),
``signature_call_raw`` the same for ``serving_raw`` on one row of 17 prebuilt tensors. The
handler timings run :class:`ServingService` (JSON bytes in, JSON bytes out) in this process; the
HTTP timings start ``python -m pipeline.serving`` on a free loopback port and send one-row
requests over one keep-alive connection. The client is a load generator's (like ``wrk``): the
request bytes are built once and the response is read by its ``content-length``, so what is
timed is the server's path plus loopback, not a client library's; ``http_json_row_httpclient``
times the same request through Python's ``http.client`` for comparison (its request building
and header parsing add about 0.15 ms here). The concurrency run keeps N raw connections busy from N
threads. Every variant is measured in ``--rounds`` interleaved slices,
so load that drifts during the run (the machine is shared) hits baseline and HTTP alike; the
load average is printed before and after. The server is always terminated.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import pipeline  # noqa: E402, F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)


@dataclasses.dataclass
class Target:
    """The dataset whose export is measured, and the model name it is served under."""

    dataset: Any = None
    model: str = ""


TARGET = Target()


def choose_target(dataset_name: str | None, model_name: str | None) -> Target:
    from pipeline.datasets import get_dataset

    dataset = get_dataset(dataset_name)
    TARGET.dataset, TARGET.model = dataset, model_name or dataset.served_model_name
    return TARGET


def percentiles(seconds: list[float]) -> dict[str, float]:
    import numpy as np

    ms = np.asarray(seconds) * 1e3
    return {
        "n": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }


def sample_row(split_dir: Path) -> dict:
    """The first row of a split as a JSON instance (absent values left out)."""
    from pipeline.predict import raw_examples

    _, records = raw_examples(TARGET.dataset, split_dir, 1)
    return {
        k: (v[0].decode() if isinstance(v[0], bytes) else v[0]) for k, v in records[0].items() if v
    }


def requests_for(row: dict) -> dict[str, bytes]:
    """The same row as a raw JSON instance, a b64 example and serving_raw named tensors."""
    from pipeline.export import RAW_SIGNATURE, raw_instances
    from pipeline.serving.examples import ExampleEncoder

    dataset = TARGET.dataset
    example = ExampleEncoder(dataset).encode_rows([row], "bench")[0]
    b64 = {"b64": base64.b64encode(example).decode()}
    raw = {"signature_name": RAW_SIGNATURE, "instances": raw_instances(dataset, [row])}
    return {
        "json_row": json.dumps({"instances": [row]}).encode(),
        "b64_row": json.dumps({"instances": [b64]}).encode(),
        "raw_row": json.dumps(raw).encode(),
        "example": example,
    }


def baselines(model_base: Path, row: dict, example: bytes) -> dict[str, Callable[[], object]]:
    """TensorFlow's own signature calls, on inputs built once."""
    import tensorflow as tf

    from pipeline.export import raw_inputs
    from pipeline.serving.layout import complete_versions, version_dir

    newest = version_dir(model_base, complete_versions(model_base)[-1])
    loaded = tf.saved_model.load(str(newest))
    default, raw = loaded.signatures["serving_default"], loaded.signatures["serving_raw"]
    examples = tf.constant([example])
    tensors = {k: tf.constant(v) for k, v in raw_inputs(TARGET.dataset, [row]).items()}
    return {
        "signature_call": lambda: default(examples=examples),
        "signature_call_raw": lambda: raw(**tensors),
        "_loaded": loaded,  # kept alive with the functions
    }


def handlers(model_base: Path, bodies: dict[str, bytes]) -> dict[str, Callable[[], object]]:
    from pipeline.serving.models import ModelRegistry
    from pipeline.serving.service import ServingService

    registry = ModelRegistry(model_base)
    registry.refresh()
    service = ServingService(TARGET.model, TARGET.dataset, registry)
    calls = {}
    for name in ("json_row", "b64_row", "raw_row"):
        body = bodies[name]
        calls[f"handler_{name}"] = lambda body=body: service.predict(TARGET.model, None, body)
    return calls


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def server(model_base: Path, grpc_port: int = 0) -> Iterator[int]:
    """``python -m pipeline.serving`` on a free REST port (gRPC on ``grpc_port``, 0: off)."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", "pipeline.serving", "--model-base", str(model_base)]
    command += ["--dataset", TARGET.dataset.name, "--model-name", TARGET.model]
    command += ["--port", str(port), "--grpc-port", str(grpc_port), "--log-level", "warning"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, process)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_ready(port: int, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("server exited before it was ready")
        with contextlib.suppress(OSError):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", f"/v1/models/{TARGET.model}")
            if connection.getresponse().status == 200:
                return
        time.sleep(0.25)
    raise RuntimeError("server not ready in time")


class Poster:
    """POSTs to :predict over one keep-alive ``http.client`` connection."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def __call__(self, body: bytes) -> None:
        self.connection.request(
            "POST", f"/v1/models/{TARGET.model}:predict", body, {"Content-Type": "application/json"}
        )
        response = self.connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(payload.decode())


class RawPoster:
    """POSTs to :predict over one keep-alive socket, as a load generator does.

    The request head is formatted per call from a prebuilt template; the response is read up to
    its ``content-length`` and its status checked, nothing else is parsed.
    """

    def __init__(self, port: int) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.head = (
            f"POST /v1/models/{TARGET.model}:predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        ).encode()

    def __call__(self, body: bytes) -> None:
        self.socket.sendall(self.head % len(body) + body)
        received = b""
        while b"\r\n\r\n" not in received:
            received += self._receive()
        head, _, payload = received.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(payload) < length:
            payload += self._receive()
        if not head.startswith(b"HTTP/1.1 200 "):
            raise RuntimeError(head.split(b"\r\n", 1)[0].decode() + " " + payload.decode())

    def _receive(self) -> bytes:
        chunk = self.socket.recv(65536)
        if not chunk:
            raise RuntimeError("the server closed the connection")
        return chunk


def interleaved(calls: dict[str, Callable[[], object]], requests: int, rounds: int) -> dict:
    """Each call ``requests`` times, in ``rounds`` slices taken in turn, after a warm-up."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        for _ in range(50):
            call()
    per_round = max(1, requests // rounds)
    clock = time.perf_counter
    for _ in range(rounds):
        for name, call in calls.items():
            times = samples[name]
            for _ in range(per_round):
                started = clock()
                call()
                times.append(clock() - started)
    return {name: percentiles(times) for name, times in samples.items()}


def concurrent(port: int, body: bytes, clients: int, seconds: float) -> dict:
    """``clients`` threads, each on its own keep-alive connection, for ``seconds``."""
    posters = [RawPoster(port) for _ in range(clients)]
    for poster in posters:
        poster(body)
    times: list[list[float]] = [[] for _ in range(clients)]
    stop = time.monotonic() + seconds

    def run(poster: RawPoster, mine: list[float]) -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            poster(body)
            mine.append(time.perf_counter() - started)

    threads = [
        threading.Thread(target=run, args=(poster, mine))
        for poster, mine in zip(posters, times, strict=True)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    every = [t for mine in times for t in mine]
    return {
        **percentiles(every),
        "clients": clients,
        "requests_per_second": round(len(every) / elapsed, 1),
    }


def ratio(results: dict, over: str, under: str, key: str = "p50_ms") -> float:
    return round(results[over][key] / results[under][key], 3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-base", type=Path, required=True)
    parser.add_argument("--dataset", help="the export's dataset (default: the default dataset)")
    parser.add_argument("--model-name", help="served name (default: the dataset's model name)")
    parser.add_argument(
        "--split-dir", type=Path, required=True, help="take the request row from this split"
    )
    parser.add_argument("--requests", type=int, default=3000, help="per variant")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--concurrent-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    choose_target(args.dataset, args.model_name)
    load_before = os.getloadavg()
    row = sample_row(args.split_dir)
    bodies = requests_for(row)
    calls = baselines(args.model_base, row, bodies["example"])
    loaded = calls.pop("_loaded")
    calls.update(handlers(args.model_base, bodies))
    with server(args.model_base) as port:
        poster, library_poster = RawPoster(port), Poster(port)
        for name in ("json_row", "b64_row", "raw_row"):
            calls[f"http_{name}"] = lambda body=bodies[name]: poster(body)
        calls["http_json_row_httpclient"] = lambda: library_poster(bodies["json_row"])
        results = interleaved(calls, args.requests, args.rounds)
        results[f"http_json_row_concurrency_{args.concurrency}"] = concurrent(
            port, bodies["json_row"], args.concurrency, args.concurrent_seconds
        )
    del loaded
    ratios = {
        "handler_json_row / signature_call (p50)": ratio(
            results, "handler_json_row", "signature_call"
        ),
        "http_json_row / signature_call (p50)": ratio(results, "http_json_row", "signature_call"),
        "http_json_row / signature_call (p99)": ratio(
            results, "http_json_row", "signature_call", "p99_ms"
        ),
        "http_json_row_httpclient / signature_call (p50)": ratio(
            results, "http_json_row_httpclient", "signature_call"
        ),
        "http_b64_row / signature_call (p50)": ratio(results, "http_b64_row", "signature_call"),
        "http_raw_row / signature_call_raw (p50)": ratio(
            results, "http_raw_row", "signature_call_raw"
        ),
        "http_raw_row / signature_call (p50)": ratio(results, "http_raw_row", "signature_call"),
    }
    report = {
        "model_base": str(args.model_base),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "ratios": ratios,
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
