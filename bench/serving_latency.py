"""Single-request serving latency, in-process and over HTTP on loopback: p50 / p99 in ms.

    .venv/bin/python bench/serving_latency.py --model-base runs/LATEST/serving/taxi \\
        [--split-dir runs/LATEST/splits/eval] [--requests 500] [--concurrency 8]

In-process timings call the export's ``serving_default`` directly and the server's own handler
code (:class:`ServingService`, JSON bytes in -> JSON out); HTTP timings start
``python -m pipeline.serve`` on a free loopback port and send one-instance requests over one
keep-alive connection. Every loop is bounded by ``--requests`` and ``--max-seconds``; the server
is always terminated.

The ``grpc`` section compares TF Serving's gRPC Predict (official ``tensorflow_serving.apis``
stub) with the signature call alone and with REST from the same server process: unary p50 / p99,
and throughput with ``--concurrency`` callers at once, with ratios against both baselines.
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
from typing import Any

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
    command += ["--grpc-port", "0"]
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


# ---- gRPC against the signature call and REST ----------------------------------------------


def throughput(
    make_call: Callable[[], Callable[[], object]],
    concurrency: int,
    requests: int,
    max_seconds: float,
) -> dict[str, float]:
    """Requests per second with ``concurrency`` threads, each with its own ``make_call()``.

    Every thread warms up, then all start together and stop after ``requests`` calls in all
    (or ``max_seconds``).
    """
    import threading

    calls = [make_call() for _ in range(concurrency)]
    for call in calls:
        for _ in range(5):
            call()
    done, lock, start = [0], threading.Lock(), threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def worker(call: Callable[[], object]) -> None:
        start.wait()
        while time.monotonic() < deadline[0]:
            with lock:
                if done[0] >= requests:
                    return
                done[0] += 1
            call()

    threads = [threading.Thread(target=worker, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    deadline[0] = time.monotonic() + max_seconds
    started = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "requests": done[0],
        "seconds": round(seconds, 3),
        "requests_per_s": round(done[0] / seconds, 1),
    }


@contextlib.contextmanager
def rest_and_grpc_server(
    model_base: Path, rest_port: int, grpc_port: int
) -> Iterator[subprocess.Popen]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", "pipeline.serve", "--model-base", str(model_base)]
    command += ["--model-name", MODEL, "--port", str(rest_port), "--grpc-port", str(grpc_port)]
    command += ["--log-level", "warning"]
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


def grpc_rows(model_base: Path, row: dict, example: bytes, args) -> dict[str, Any]:
    """gRPC Predict vs the signature call alone and vs REST (same server): latency, throughput."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from pipeline.datasets import get_dataset
    from pipeline.export import raw_inputs
    from pipeline.serving.layout import complete_versions

    newest = model_base / str(complete_versions(model_base)[-1])
    signature = tf.saved_model.load(str(newest)).signatures["serving_default"]
    tensor = tf.constant([example])
    examples_request = predict_pb2.PredictRequest()
    examples_request.model_spec.name = MODEL
    examples_request.inputs["examples"].CopyFrom(tf.make_tensor_proto([example]))
    raw_request = predict_pb2.PredictRequest()
    raw_request.model_spec.name, raw_request.model_spec.signature_name = MODEL, "serving_raw"
    for name, values in raw_inputs(get_dataset(MODEL), [row]).items():
        raw_request.inputs[name].CopyFrom(tf.make_tensor_proto(values))
    b64_body = json.dumps({"instances": [{"b64": base64.b64encode(example).decode()}]}).encode()
    n, limit, concurrency = args.requests, args.max_seconds, args.concurrency
    rest_port, grpc_port = free_port(), free_port()

    def signature_call() -> Callable[[], object]:
        return lambda: signature(examples=tensor)

    with rest_and_grpc_server(model_base, rest_port, grpc_port) as process:
        wait_ready(rest_port, process)
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def grpc_call(request=examples_request) -> Callable[[], object]:
            return lambda: stub.Predict(request, timeout=30)

        def rest_call() -> Callable[[], object]:
            connection = http.client.HTTPConnection("127.0.0.1", rest_port, timeout=30)
            headers = {"Content-Type": "application/json"}

            def post() -> None:
                connection.request("POST", f"/v1/models/{MODEL}:predict", b64_body, headers)
                response = connection.getresponse()
                payload = response.read()
                if response.status != 200:
                    raise RuntimeError(payload.decode())

            return post

        latency = {
            "signature_call": timed(signature_call(), n, limit),
            "grpc_example": timed(grpc_call(), n, limit),
            "grpc_raw_tensors": timed(grpc_call(raw_request), n, limit),
            "rest_b64_same_server": timed(rest_call(), n, limit),
        }
        rates = {
            "signature_call": throughput(signature_call, concurrency, n * 4, limit),
            "grpc_example": throughput(grpc_call, concurrency, n * 4, limit),
            "rest_b64_same_server": throughput(rest_call, concurrency, n * 4, limit),
        }
        channel.close()
    grpc_p50, grpc_rate = latency["grpc_example"]["p50_ms"], rates["grpc_example"]["requests_per_s"]
    return {
        "unary_latency": latency,
        f"throughput_concurrency_{concurrency}": rates,
        "ratios": {
            "grpc_p50_over_signature_p50": round(grpc_p50 / latency["signature_call"]["p50_ms"], 2),
            "grpc_p50_over_rest_p50": round(
                grpc_p50 / latency["rest_b64_same_server"]["p50_ms"], 2
            ),
            "grpc_throughput_over_signature": round(
                grpc_rate / rates["signature_call"]["requests_per_s"], 2
            ),
            "grpc_throughput_over_rest": round(
                grpc_rate / rates["rest_b64_same_server"]["requests_per_s"], 2
            ),
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-base", type=Path, required=True)
    parser.add_argument("--split-dir", type=Path, help="take the request row from this split")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--max-seconds", type=float, default=60.0, help="cap per measurement")
    parser.add_argument("--concurrency", type=int, default=8, help="callers for the gRPC rows")
    args = parser.parse_args(argv)
    row, example = sample_request(args.split_dir)
    results = {
        **in_process(args.model_base, row, example, args),
        **over_http(args.model_base, row, example, args),
        "grpc": grpc_rows(args.model_base, row, example, args),
    }
    print(json.dumps({"model_base": str(args.model_base), "results": results}, indent=2))


if __name__ == "__main__":
    main()
