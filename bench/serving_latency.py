"""Single-request serving latency, in-process and over HTTP on loopback: p50 / p99 in ms.

    .venv/bin/python bench/serving_latency.py --model-base runs/LATEST/serving/taxi \\
        [--split-dir runs/LATEST/splits/eval] [--requests 500]

In-process timings call the export's ``serving_default`` directly and the server's own handler
code (:class:`ServingService`, JSON bytes in -> JSON out); HTTP timings start
``python -m pipeline.serve`` on a free loopback port and send one-instance requests over one
keep-alive connection. Every loop is bounded by ``--requests`` and ``--max-seconds``; the server
is always terminated.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import pipeline  # noqa: E402, F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

MODEL = "taxi"
SAMPLE_ROW = {
    "fare": 12.45,
    "trip_miles": 2.3,
    "trip_seconds": 780,
    "trip_start_timestamp": 1400000000,
    "trip_start_hour": 16,
    "trip_start_day": 5,
    "trip_start_month": 5,
    "payment_type": "Credit Card",
    "company": "Flash Cab",
    "pickup_community_area": 8,
    "dropoff_community_area": 32,
    "pickup_latitude": 41.899,
    "pickup_longitude": -87.633,
}


def percentiles(seconds: list[float]) -> dict[str, float]:
    import numpy as np

    ms = np.asarray(seconds) * 1e3
    return {
        "n": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }


def timed(call: Callable[[], object], requests: int, max_seconds: float) -> dict[str, float]:
    """Time ``call`` after a short warm-up, at most ``requests`` times or ``max_seconds``."""
    for _ in range(min(20, requests)):
        call()
    samples: list[float] = []
    deadline = time.monotonic() + max_seconds
    while len(samples) < requests and time.monotonic() < deadline:
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


def sample_request(split_dir: Path | None) -> tuple[dict, bytes]:
    """One raw row as JSON features and as a serialized example (the same row)."""
    from pipeline.datasets import get_dataset
    from pipeline.serving.examples import ExampleEncoder

    dataset = get_dataset(MODEL)
    row = SAMPLE_ROW
    if split_dir is not None:
        from pipeline.predict import raw_examples

        _, records = raw_examples(dataset, split_dir, 1)
        row = {
            k: (v[0].decode() if isinstance(v[0], bytes) else v[0])
            for k, v in records[0].items()
            if v
        }
    return row, ExampleEncoder(dataset).encode_rows([row], "bench")[0]


def in_process(model_base: Path, row: dict, example: bytes, args) -> dict[str, dict]:
    import tensorflow as tf

    from pipeline.datasets import get_dataset
    from pipeline.serving.models import ModelRegistry
    from pipeline.serving.protocol import dumps
    from pipeline.serving.service import ServingService

    registry = ModelRegistry(model_base)
    registry.refresh()
    service = ServingService(MODEL, get_dataset(MODEL), registry)
    model = registry.get()
    signature = model.signatures["serving_default"]
    tensor = tf.constant([example])
    json_body = json.dumps({"instances": [row]}).encode()
    b64_body = json.dumps({"instances": [{"b64": base64.b64encode(example).decode()}]}).encode()
    return {
        "saved_model_signature_call": timed(
            lambda: signature(examples=tensor), args.requests, args.max_seconds
        ),
        "handler_json_row": timed(
            lambda: dumps(service.predict(MODEL, None, json_body)), args.requests, args.max_seconds
        ),
        "handler_b64_row": timed(
            lambda: dumps(service.predict(MODEL, None, b64_body)), args.requests, args.max_seconds
        ),
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def server(model_base: Path, port: int) -> Iterator[subprocess.Popen]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", "pipeline.serve", "--model-base", str(model_base)]
    command += ["--model-name", MODEL, "--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        yield process
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
            connection.request("GET", f"/v1/models/{MODEL}")
            if connection.getresponse().status == 200:
                return
        time.sleep(0.25)
    raise RuntimeError("server not ready in time")


def over_http(model_base: Path, row: dict, example: bytes, args) -> dict[str, dict]:
    port = free_port()
    json_body = json.dumps({"instances": [row]}).encode()
    b64_body = json.dumps({"instances": [{"b64": base64.b64encode(example).decode()}]}).encode()
    with server(model_base, port) as process:
        wait_ready(port, process)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Content-Type": "application/json"}

        def post(body: bytes) -> None:
            connection.request("POST", f"/v1/models/{MODEL}:predict", body, headers)
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200:
                raise RuntimeError(payload.decode())

        results = {
            "http_json_row": timed(lambda: post(json_body), args.requests, args.max_seconds),
            "http_b64_row": timed(lambda: post(b64_body), args.requests, args.max_seconds),
        }
        connection.close()
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-base", type=Path, required=True)
    parser.add_argument("--split-dir", type=Path, help="take the request row from this split")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--max-seconds", type=float, default=60.0, help="cap per measurement")
    args = parser.parse_args(argv)
    row, example = sample_request(args.split_dir)
    results = {
        **in_process(args.model_base, row, example, args),
        **over_http(args.model_base, row, example, args),
    }
    print(json.dumps({"model_base": str(args.model_base), "results": results}, indent=2))


if __name__ == "__main__":
    main()
