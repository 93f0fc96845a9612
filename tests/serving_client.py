"""A ``python -m pipeline.serving`` child process on loopback and a minimal HTTP client for it."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tests.conftest import PYTHON, subprocess_env

MODEL = "taxi"


class Client:
    """HTTP/1.1 client for one loopback server; answers are parsed as TF Serving JSON (NaN ok)."""

    def __init__(self, port: int, pid: int | None = None) -> None:
        self.port = port
        self.pid = pid

    def raw(
        self, method: str, path: str, body: Any = None, headers: dict | None = None
    ) -> tuple[int, bytes]:
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(
                method,
                path,
                body=body,
                headers={"Content-Type": "application/json", **(headers or {})},
            )
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict]:
        status, payload = self.raw(method, path, body)
        return status, json.loads(payload or b"{}")

    def get(self, path: str) -> tuple[int, dict]:
        return self.call("GET", path)

    def post(self, path: str, body: Any) -> tuple[int, dict]:
        return self.call("POST", path, body)

    def rss_bytes(self) -> int:
        """Resident memory of the server process (Linux)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def server_process(
    command: list[str],
    workdir: Path,
    log_path: Path,
    ready: Callable[[], bool],
    not_yet: tuple[type[BaseException], ...] = (OSError,),
) -> Iterator[subprocess.Popen]:
    """Start ``command`` (output to ``log_path``), poll ``ready`` until it is true, always stop it.

    ``ready`` raising one of ``not_yet`` means the server is still starting; the process dying
    or 180 s passing fails the test with the end of its log.
    """
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, cwd=workdir, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "server not ready: " + log_path.read_text()[-3000:]
            with contextlib.suppress(*not_yet):
                if ready():
                    break
            time.sleep(0.25)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def running_server(
    model_base: Path, workdir: Path, *extra: str, model: str = MODEL
) -> Iterator[Client]:
    """Start ``python -m pipeline.serving``, wait until the model answers, always terminate it."""
    port = free_port()
    command = [
        *(PYTHON, "-m", "pipeline.serving", "--model-base", str(model_base)),
        *("--model-name", model, "--port", str(port), "--poll-seconds", "0.5"),
        *("--grpc-port", "0"),  # REST only: gRPC has its own tests (test_grpc_serve.py)
        *extra,
    ]
    client = Client(port)
    ready = lambda: client.get(f"/v1/models/{model}")[0] == 200  # noqa: E731
    with server_process(command, workdir, workdir / f"server-{port}.log", ready) as process:
        client.pid = process.pid
        yield client


def wait_for(condition, timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


TOY_LABELS = ("low", "mid", "high")


def _toy_model():
    """``predictions = fare / 2 + 3`` (TF Serving's half_plus_three), three class scores and a
    ``log_fare`` that is -inf for a zero fare; a missing fare reads as 1."""
    import tensorflow as tf

    class Toy(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(self, examples):
            spec = {"fare": tf.io.FixedLenFeature([], tf.float32, default_value=1.0)}
            fare = tf.io.parse_example(examples, spec)["fare"]
            logits = tf.stack([fare, 2.0 * fare, 3.0 * fare], axis=1)
            return {
                "predictions": 0.5 * fare + 3.0,
                "probabilities": tf.nn.softmax(logits),
                "log_fare": tf.math.log(fare),
            }

    return Toy()


def write_toy_export(base: Path) -> Path:
    """``base/1``: a SavedModel with regression and multi-class signatures (real TensorFlow),
    quick to save and load."""
    import tensorflow as tf

    from pipeline.definition import LabelKind
    from pipeline.export import (
        CLASSIFICATION_SIGNATURE,
        SERVING_SIGNATURE,
        head_signatures,
        set_signature_methods,
    )

    toy = _toy_model()
    serving = toy.serve.get_concrete_function()
    regression, regress_method = head_signatures(LabelKind.REGRESSION, serving)
    classification, classify_method = head_signatures(LabelKind.MULTICLASS, serving, TOY_LABELS)
    signatures = {SERVING_SIGNATURE: serving, **regression, **classification}
    # The same classifier with tf.saved_model.save's method name, for the method-name check.
    signatures["classification_as_predict"] = classification[CLASSIFICATION_SIGNATURE]
    tf.saved_model.save(toy, str(base / "1"), signatures=signatures)
    set_signature_methods(str(base / "1"), {**regress_method, **classify_method})
    return base
