"""The REST server over real HTTP on loopback, in a child process, against the trained export.

Checks what a TF Serving client relies on: status, metadata, row/columnar/b64/JSON predictions
equal to the export's own ``serving_default``, classify, ``/versions/N``, hot pickup of a pushed
version, and 4xx errors that name the bad field while the server keeps serving.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from pipeline.export import EXAMPLES_INPUT, SERVING_SIGNATURE
from pipeline.predict import raw_examples
from pipeline.push import push
from pipeline.serving.errors import NotFound
from pipeline.serving.examples import SMALL_BATCH, ExampleEncoder
from pipeline.serving.models import ModelRegistry
from tests.conftest import PYTHON, subprocess_env

pytestmark = pytest.mark.slow

MODEL = "taxi"
ROWS = 16
MAX_BODY = 200_000


# ---- a server in a child process -------------------------------------------------------------


class Client:
    """Minimal HTTP/1.1 client for one loopback server."""

    def __init__(self, port: int) -> None:
        self.port = port

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict]:
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(
                method, path, body=body, headers={"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            connection.close()

    def get(self, path: str) -> tuple[int, dict]:
        return self.call("GET", path)

    def post(self, path: str, body: Any) -> tuple[int, dict]:
        return self.call("POST", path, body)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(model_base: Path, workdir: Path, *extra: str) -> Iterator[Client]:
    """Start ``python -m pipeline.serve``, wait until the model answers, always terminate it."""
    port = free_port()
    log_path = workdir / f"server-{port}.log"
    command = [
        *(PYTHON, "-m", "pipeline.serve", "--model-base", str(model_base)),
        *("--model-name", MODEL, "--port", str(port), "--poll-seconds", "0.5"),
        *("--grpc-port", "0"),  # REST only: gRPC has its own tests (test_grpc_serve.py)
        *extra,
    ]
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, cwd=workdir, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT
        )
    client = Client(port)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "server not ready: " + log_path.read_text()[-3000:]
            with contextlib.suppress(OSError):
                if client.get(f"/v1/models/{MODEL}")[0] == 200:
                    break
            time.sleep(0.25)
        yield client
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(condition, timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def steady_traffic(client: Client, body: dict, limit: int = 5000) -> Iterator[list[int]]:
    """Predict in a background thread (at most ``limit`` requests) while the block runs."""
    statuses: list[int] = []
    stop = threading.Event()

    def send() -> None:
        while not stop.is_set() and len(statuses) < limit:
            statuses.append(client.post(PREDICT, body)[0])

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield statuses
    finally:
        stop.set()
        thread.join(timeout=60)


def served_versions(client: Client) -> set[str]:
    status, body = client.get(f"/v1/models/{MODEL}")
    assert status == 200, body
    return {s["version"] for s in body["model_version_status"] if s["state"] == "AVAILABLE"}


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eval_rows(small_splits, taxi) -> tuple[list[bytes], list[dict]]:
    """Eval rows as serialized raw examples and as the JSON objects a client would send."""
    examples, records = raw_examples(taxi, small_splits["eval"], ROWS)
    rows = []
    for record in records:
        row = {}
        for name, values in record.items():
            if values:  # a missing value is left out (the JSON null case is tested apart)
                row[name] = values[0].decode() if isinstance(values[0], bytes) else values[0]
        rows.append(row)
    return examples, rows


@pytest.fixture(scope="module")
def expected(trained_export, eval_rows) -> dict[str, np.ndarray]:
    """The export's own ``serving_default`` on the eval examples, in this process."""
    _, exported = trained_export
    loaded = tf.saved_model.load(str(exported.export_dir))
    outputs = loaded.signatures[SERVING_SIGNATURE](**{EXAMPLES_INPUT: tf.constant(eval_rows[0])})
    return {name: value.numpy() for name, value in outputs.items()}


@pytest.fixture(scope="module")
def server_dirs(tmp_path_factory, trained_export) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve")
    _, exported = trained_export
    shutil.copytree(exported.export_dir, root / "base" / "1")
    return {"root": root, "base": root / "base", "log": root / "request-log"}


@pytest.fixture(scope="module")
def client(server_dirs) -> Iterator[Client]:
    extra = [
        *("--request-log", str(server_dirs["log"]), "--request-log-sample", "1.0"),
        *("--request-log-flush-seconds", "0.5", "--max-body-bytes", str(MAX_BODY)),
    ]
    with running_server(server_dirs["base"], server_dirs["root"], *extra) as running:
        yield running


def b64(example: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(example).decode()}


def assert_matches(probabilities: list, classes: list, expected: dict[str, np.ndarray]) -> None:
    np.testing.assert_allclose(
        np.asarray(probabilities, np.float32), expected["probabilities"], rtol=1e-6, atol=1e-7
    )
    np.testing.assert_array_equal(np.asarray(classes), expected["classes"])


def row_outputs(body: dict) -> tuple[list, list]:
    predictions = body["predictions"]
    return [p["probabilities"] for p in predictions], [p["classes"] for p in predictions]


PREDICT = f"/v1/models/{MODEL}:predict"


# ---- status and metadata ---------------------------------------------------------------------


def test_status_in_tf_serving_format(client):
    available = {
        "version": "1",
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }
    assert client.get(f"/v1/models/{MODEL}") == (200, {"model_version_status": [available]})
    assert client.get(f"/v1/models/{MODEL}/versions/1") == (
        200,
        {"model_version_status": [available]},
    )
    status, body = client.get(f"/v1/models/{MODEL}/versions/9")
    assert status == 404 and "9" in body["error"]
    status, body = client.get("/v1/models/other")
    assert status == 404 and "other" in body["error"]


def test_metadata_describes_signatures_and_raw_features(client, taxi):
    status, body = client.get(f"/v1/models/{MODEL}/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": MODEL, "signature_name": "", "version": "1"}
    signature = body["metadata"]["signature_def"]["signature_def"][SERVING_SIGNATURE]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert signature["inputs"][EXAMPLES_INPUT]["dtype"] == "DT_STRING"
    assert signature["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"
    assert signature["outputs"]["classes"]["dtype"] == "DT_INT64"
    raw = {f["name"]: f["dtype"] for f in body["metadata"]["raw_features"]}
    assert list(raw) == [c.name for c in taxi.serving_columns]
    assert raw["fare"] == "DT_FLOAT" and raw["company"] == "DT_STRING" and "tips" not in raw
    assert client.get(f"/v1/models/{MODEL}/versions/1/metadata")[0] == 200


# ---- predictions -----------------------------------------------------------------------------


def test_b64_rows_equal_the_exports_own_predictions(client, eval_rows, expected):
    examples, _ = eval_rows
    status, body = client.post(PREDICT, {"instances": [b64(e) for e in examples]})
    assert status == 200, body
    assert_matches(*row_outputs(body), expected)
    named = {"instances": [{EXAMPLES_INPUT: b64(e)} for e in examples]}
    assert row_outputs(client.post(PREDICT, named)[1]) == row_outputs(body)


def test_json_rows_equal_the_exports_own_predictions(client, eval_rows, expected):
    _, rows = eval_rows
    assert any(len(row) < len(rows[0]) for row in rows), "eval rows should miss some features"
    status, body = client.post(PREDICT, {"instances": rows, "signature_name": SERVING_SIGNATURE})
    assert status == 200, body
    assert_matches(*row_outputs(body), expected)


def test_columnar_formats_equal_the_exports_own_predictions(client, eval_rows, expected, taxi):
    examples, rows = eval_rows
    columns = {c.name: [row.get(c.name) for row in rows] for c in taxi.serving_columns}
    status, body = client.post(PREDICT, {"inputs": columns})
    assert status == 200, body
    assert_matches(body["outputs"]["probabilities"], body["outputs"]["classes"], expected)
    status, body = client.post(PREDICT, {"inputs": {EXAMPLES_INPUT: [b64(e) for e in examples]}})
    assert status == 200, body
    assert_matches(body["outputs"]["probabilities"], body["outputs"]["classes"], expected)


def test_classify_returns_class_scores(client, eval_rows, expected):
    _, rows = eval_rows
    status, body = client.post(f"/v1/models/{MODEL}:classify", {"examples": rows})
    assert status == 200, body
    assert [[label for label, _ in result] for result in body["results"]] == [["0", "1"]] * ROWS
    positive = np.asarray([result[1][1] for result in body["results"]], np.float32)
    np.testing.assert_allclose(positive, expected["probabilities"], rtol=1e-6, atol=1e-7)
    context = {"payment_type": rows[0]["payment_type"]}
    examples = [{k: v for k, v in rows[0].items() if k != "payment_type"}]
    status, body = client.post(
        f"/v1/models/{MODEL}/versions/1:classify", {"examples": examples, "context": context}
    )
    assert status == 200 and body["results"][0][1][1] == pytest.approx(
        float(expected["probabilities"][0]), rel=1e-6
    )


def test_transform_signature_is_reachable(client, eval_rows, taxi):
    _, rows = eval_rows
    body = {"instances": rows[:2], "signature_name": "transform_features"}
    status, answer = client.post(PREDICT, body)
    assert status == 200, answer
    assert set(answer["predictions"][0]) == {f.output_name for f in taxi.features}


def test_versioned_route_answers_like_the_default(client, eval_rows, expected):
    examples, _ = eval_rows
    body = {"instances": [b64(e) for e in examples]}
    status, answer = client.post(f"/v1/models/{MODEL}/versions/1:predict", body)
    assert status == 200
    assert_matches(*row_outputs(answer), expected)
    status, answer = client.post(f"/v1/models/{MODEL}/versions/2:predict", body)
    assert status == 404 and "version 2" in answer["error"]


def test_missing_and_null_features_still_predict(client):
    instances = [{}, {"fare": 12.5}, {"fare": None, "company": [], "payment_type": ["Cash"]}]
    status, body = client.post(PREDICT, {"instances": instances})
    assert status == 200, body
    probabilities, _ = row_outputs(body)
    assert len(probabilities) == 3 and all(0.0 <= p <= 1.0 for p in probabilities)


# ---- bad requests ----------------------------------------------------------------------------

BAD_REQUESTS = [
    ({"instances": [{"fare": 12.5, "fair": 3}]}, "'fair'"),
    ({"instances": [{"fare": 12.5}, {"fare": "12.5"}]}, "instances[1].fare"),
    ({"instances": [{"trip_start_hour": 7.5}]}, "instances[0].trip_start_hour"),
    ({"instances": [{"company": 17}]}, "instances[0].company"),
    ({"instances": [{"tips": 2.0}]}, "'tips'"),
    ({"instances": [{"fare": [1.0, 2.0]}]}, "instances[0].fare"),
    ({"instances": []}, "instances"),
    ({"instances": [{"b64": "not base64!"}]}, "instances[0].b64"),
    ({"instances": ["raw string"]}, "instances[0]"),
    ({"inputs": {"fare": [1.0, 2.0], "trip_miles": [1.0]}}, "differ in length"),
    ({"inputs": {"fare": 1.0}}, "inputs.fare"),
    ({"instances": [{}], "inputs": {}}, "instances"),
    ({"instances": [{}], "signature_name": "nope"}, "signature_name"),
    ({"instances": [{}], "extra": 1}, "extra"),
    ({"examples": [{}]}, "examples"),
]


@pytest.mark.parametrize(("body", "named"), BAD_REQUESTS, ids=[n for _, n in BAD_REQUESTS])
def test_bad_requests_get_a_400_naming_the_field(client, body, named):
    status, answer = client.post(PREDICT, body)
    assert status == 400, answer
    assert named in answer["error"]
    assert client.post(PREDICT, {"instances": [{"fare": 10.0}]})[0] == 200


def test_wrongly_typed_b64_example_is_a_400(client):
    wrong = tf.train.Example(
        features=tf.train.Features(
            feature={"fare": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"ten"]))}
        )
    ).SerializeToString()
    status, answer = client.post(PREDICT, {"instances": [b64(wrong)]})
    assert status == 400 and "fare" in answer["error"], answer


@pytest.mark.parametrize("body", [b"", b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_non_json_bodies_are_a_400(client, body):
    status, answer = client.post(PREDICT, body)
    assert status == 400 and "JSON" in answer["error"], answer


def test_oversized_body_is_a_413_and_the_server_keeps_serving(client):
    body = json.dumps({"instances": [{"fare": 1.0, "company": "x" * 100}] * 3000}).encode()
    assert len(body) > MAX_BODY
    status, answer = client.post(PREDICT, body)
    assert status == 413 and "limit" in answer["error"]
    assert client.post(PREDICT, {"instances": [{"fare": 10.0}]})[0] == 200


def test_unknown_model_and_route_are_404(client):
    status, answer = client.post("/v1/models/other:predict", {"instances": [{}]})
    assert status == 404 and "other" in answer["error"]
    assert client.get("/v1/nothing")[0] == 404


# ---- request log -----------------------------------------------------------------------------


def test_sampled_requests_are_logged_as_raw_examples(client, server_dirs):
    marker = 4321.5
    assert client.post(PREDICT, {"instances": [{"fare": marker, "company": "Sun Taxi"}]})[0] == 200

    def logged_fares() -> list[float]:
        fares = []
        for path in sorted(server_dirs["log"].glob("requests-*.tfrecord")):
            for record in tf.data.TFRecordDataset(str(path)):
                example = tf.train.Example.FromString(record.numpy())
                fares.extend(example.features.feature["fare"].float_list.value)
        return fares

    wait_for(lambda: marker in logged_fares(), what="the request in the request log")


# ---- hot pickup ------------------------------------------------------------------------------


def test_pushed_version_is_picked_up_without_restart(trained_export, tmp_path, eval_rows):
    trained, exported = trained_export
    auc = trained.metrics["eval"]["auc"]
    base = tmp_path / "base"
    assert push(exported.export_dir, base, auc, 0.5, 0.01).version == 1
    examples, _ = eval_rows
    body = {"instances": [b64(e) for e in examples[:4]]}
    with running_server(base, tmp_path) as client:
        assert served_versions(client) == {"1"}
        with steady_traffic(client, body) as statuses:  # requests keep working during the swap
            assert push(exported.export_dir, base, auc, 0.5, 0.01, version=2).blessed
            wait_for(lambda: served_versions(client) == {"1", "2"}, what="version 2")
        assert statuses and set(statuses) == {200}
        assert client.get(f"/v1/models/{MODEL}/metadata")[1]["model_spec"]["version"] == "2"
        first = client.post(f"/v1/models/{MODEL}/versions/1:predict", body)
        assert first[0] == 200 and client.post(PREDICT, body) == first

        # A third version evicts the oldest: at most two stay loaded.
        assert push(exported.export_dir, base, auc, 0.5, 0.01, version=3).blessed
        wait_for(lambda: served_versions(client) == {"2", "3"}, what="version 3")
        assert client.post(f"/v1/models/{MODEL}/versions/1:predict", body)[0] == 404

        # A broken newer version is reported, not served; the good one keeps answering.
        (base / "4").mkdir()
        (base / "4" / "saved_model.pb").write_bytes(b"not a SavedModel")
        status = wait_for(
            lambda: [
                s
                for s in client.get(f"/v1/models/{MODEL}")[1]["model_version_status"]
                if s["version"] == "4"
            ],
            what="version 4's failure",
        )
        assert status[0]["state"] == "END" and status[0]["status"]["error_code"] != "OK"
        assert served_versions(client) == {"2", "3"}
        assert client.post(PREDICT, body) == first


# ---- encoding and the version policy, without a server -------------------------------------


@pytest.mark.parametrize("copies", [1, 3], ids=["protos", "arrow"])
def test_json_rows_encode_like_the_training_path(eval_rows, taxi, copies):
    examples, rows = eval_rows
    assert (len(rows) * copies > SMALL_BATCH) == (copies > 1)  # both serializers are covered
    encoded = ExampleEncoder(taxi).encode_rows(rows * copies, "instances")
    assert [present_values(e) for e in encoded] == [present_values(e) for e in examples * copies]


def present_values(serialized: bytes) -> dict[str, list]:
    """An example's non-empty features: what a VarLen parse sees (absent == empty list)."""
    features = tf.train.Example.FromString(serialized).features.feature
    kinds = {name: feature.WhichOneof("kind") for name, feature in features.items()}
    values = {name: getattr(features[name], kind).value for name, kind in kinds.items() if kind}
    return {name: list(v) for name, v in values.items() if len(v)}


def test_b64_strings_and_integral_floats_are_accepted(taxi):
    encoder = ExampleEncoder(taxi)
    plain = encoder.encode_rows([{"company": "Sun Taxi", "trip_start_hour": 7}], "instances")
    coded = {"b64": base64.b64encode(b"Sun Taxi").decode()}
    other = encoder.encode_rows([{"company": coded, "trip_start_hour": 7.0}], "instances")
    assert present_values(plain[0]) == present_values(other[0])


# ---- the version policy, without TensorFlow loads --------------------------------------------


def test_registry_keeps_the_newest_two_and_follows_the_disk(tmp_path):
    loads: list[int] = []

    def loader(directory: Path, version: int) -> Any:
        loads.append(version)
        if (directory / "broken").exists():
            raise ValueError("cannot load")
        return f"model-{version}"

    def add(version: int, broken: bool = False) -> None:
        (tmp_path / str(version)).mkdir()
        (tmp_path / str(version) / "saved_model.pb").write_bytes(b"")
        if broken:
            (tmp_path / str(version) / "broken").write_text("")

    registry = ModelRegistry(tmp_path, keep=2, loader=loader)
    add(1)
    add(2)
    assert registry.refresh() and registry.get() == "model-2" and loads == [2]
    add(3)
    add(4, broken=True)
    registry.refresh()
    assert registry.get() == "model-3" and registry.get(2) == "model-2" and loads == [2, 4, 3]
    assert not registry.refresh() and loads == [2, 4, 3]  # a failure is not retried...
    assert [s["state"] for s in registry.statuses()] == ["END", "AVAILABLE", "AVAILABLE"]
    (tmp_path / "4" / "broken").unlink()  # ...until its files change (e.g. a copy finished)
    registry.refresh()
    assert registry.get() == "model-4" and loads == [2, 4, 3, 4]
    with pytest.raises(NotFound):
        registry.get(2)  # evicted: at most two versions stay loaded
    (tmp_path / ".5.staging-x").mkdir()
    shutil.rmtree(tmp_path / "3")  # rolled back on disk: the previous version answers again
    shutil.rmtree(tmp_path / "4")
    registry.refresh()
    assert registry.get() == "model-2" and loads[-1] == 2
    assert [s["version"] for s in registry.statuses()] == ["2"]
