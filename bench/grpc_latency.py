"""gRPC Predict against the SavedModel signature call and against REST from the same server.

    .venv/bin/python bench/grpc_latency.py --model-base runs/LATEST/serving/<model> \\
        --split-dir runs/LATEST/splits/eval [--dataset NAME] [--requests 500] [--concurrency 8]

One server process (``python -m pipeline.serving``) answers both APIs. Unary p50 / p99 of TF
Serving's Predict through the official ``tensorflow_serving.apis`` stub (serialized examples and
``serving_raw`` named tensors), of REST ``:predict`` with a b64 example, and of the signature call
alone, measured in interleaved rounds; then throughput with ``--concurrency`` callers at once.
Ratios are against the signature call and against REST, measured in the same run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_latency import (
    TARGET,
    baselines,
    choose_target,
    free_port,
    interleaved,
    requests_for,
    sample_row,
    server,
)


def throughput(
    make_call: Callable[[], Callable[[], object]], concurrency: int, seconds: float
) -> dict[str, float]:
    """Requests per second with ``concurrency`` threads, each with its own ``make_call()``."""
    calls = [make_call() for _ in range(concurrency)]
    for call in calls:
        for _ in range(5):
            call()
    counts = [0] * concurrency
    start = threading.Barrier(concurrency + 1)
    stop = [0.0]

    def worker(index: int, call: Callable[[], object]) -> None:
        start.wait()
        while time.monotonic() < stop[0]:
            call()
            counts[index] += 1

    threads = [threading.Thread(target=worker, args=item) for item in enumerate(calls)]
    for thread in threads:
        thread.start()
    stop[0] = time.monotonic() + seconds
    started = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {"concurrency": concurrency, "requests_per_s": round(sum(counts) / elapsed, 1)}


def predict_requests(row: dict, example: bytes) -> dict[str, object]:
    """The same row as a gRPC PredictRequest of examples and one of ``serving_raw`` tensors."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from pipeline.export import RAW_SIGNATURE, raw_inputs

    examples = predict_pb2.PredictRequest()
    examples.model_spec.name = TARGET.model
    examples.inputs["examples"].CopyFrom(tf.make_tensor_proto([example]))
    raw = predict_pb2.PredictRequest()
    raw.model_spec.name, raw.model_spec.signature_name = TARGET.model, RAW_SIGNATURE
    for name, values in raw_inputs(TARGET.dataset, [row]).items():
        raw.inputs[name].CopyFrom(tf.make_tensor_proto(values))
    return {"grpc_example": examples, "grpc_raw_tensors": raw}


def rest_caller(port: int, body: bytes) -> Callable[[], Callable[[], object]]:
    def make() -> Callable[[], object]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Content-Type": "application/json"}

        def post() -> None:
            connection.request("POST", f"/v1/models/{TARGET.model}:predict", body, headers)
            response = connection.getresponse()
            payload = response.read()
            if response.status != 200:
                raise RuntimeError(payload.decode())

        return post

    return make


def measure(args: argparse.Namespace) -> dict:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    row = sample_row(args.split_dir)
    bodies = requests_for(row)
    calls = baselines(args.model_base, row, bodies["example"])
    loaded = calls.pop("_loaded")
    signature = calls["signature_call"]
    grpc_port = free_port()
    with server(args.model_base, grpc_port) as rest_port:
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def grpc_caller(request) -> Callable[[], Callable[[], object]]:
            return lambda: lambda: stub.Predict(request, timeout=30)

        grpc_requests = predict_requests(row, bodies["example"])
        callers = {
            "signature_call": lambda: signature,
            **{name: grpc_caller(request) for name, request in grpc_requests.items()},
            "rest_b64_same_server": rest_caller(rest_port, bodies["b64_row"]),
        }
        latency = interleaved({n: make() for n, make in callers.items()}, args.requests, 5)
        rates = {
            name: throughput(callers[name], args.concurrency, args.seconds)
            for name in ("signature_call", "grpc_example", "rest_b64_same_server")
        }
        channel.close()
    del loaded
    grpc_p50, grpc_rate = latency["grpc_example"]["p50_ms"], rates["grpc_example"]["requests_per_s"]
    return {
        "unary_latency": latency,
        f"throughput_concurrency_{args.concurrency}": rates,
        "ratios": {
            "grpc_p50 / signature_p50": round(grpc_p50 / latency["signature_call"]["p50_ms"], 2),
            "grpc_p50 / rest_p50": round(grpc_p50 / latency["rest_b64_same_server"]["p50_ms"], 2),
            "grpc_rate / signature_rate": round(
                grpc_rate / rates["signature_call"]["requests_per_s"], 2
            ),
            "grpc_rate / rest_rate": round(
                grpc_rate / rates["rest_b64_same_server"]["requests_per_s"], 2
            ),
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-base", type=Path, required=True)
    parser.add_argument("--split-dir", type=Path, required=True, help="the request row's split")
    parser.add_argument("--dataset", help="the export's dataset (default: the default dataset)")
    parser.add_argument("--model-name", help="served name (default: the dataset's model name)")
    parser.add_argument("--requests", type=int, default=500, help="unary calls per variant")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="per throughput variant")
    args = parser.parse_args(argv)
    choose_target(args.dataset, args.model_name)
    load_before = os.getloadavg()
    results = measure(args)
    results["load_average"] = {"before": load_before, "after": os.getloadavg()}
    print(json.dumps({"model_base": str(args.model_base), **results}, indent=2))


if __name__ == "__main__":
    main()
