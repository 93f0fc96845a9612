"""TF Serving's gRPC API of ``python -m pipeline.serving``, driven with the official client.

Two real server processes on loopback, called through ``tensorflow_serving.apis``'
``PredictionServiceStub`` and ``ModelServiceStub``:

* the trained taxi export: predictions over gRPC (serialized examples, named raw tensors,
  transform features) equal REST's from the same process and the export's own signatures in
  this process; metadata, status, versions and labels; every refusal's status code and the
  field its message names; the request log; a pushed version picked up without a restart;
* a small export with TF Serving's classify and regress signatures (method names set as an
  Estimator-era export has them) and a deliberately slow signature: Classify, Regress,
  MultiInference, the signature method rules, deadlines and the concurrency cap.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import struct_pb2
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from pipeline.export import raw_inputs
from pipeline.predict import raw_examples
from pipeline.push import BlessingRule, push
from pipeline.serving.models import read_signature_defs
from pipeline.serving.rpc_status import RpcError
from pipeline.serving.signature_rules import CLASSIFY, PREDICT, REGRESS, SignatureRules
from tests.conftest import PYTHON, REPO_ROOT
from tests.serving_client import server_process, wait_for

pytestmark = pytest.mark.slow

AUC_RULE = BlessingRule("auc", higher_is_better=True, floor=0.5, tolerance=0.01)

MODEL = "taxi"
ROWS = 16
MAX_BATCH = 1000
MAX_RECEIVE = 400_000
CODE = grpc.StatusCode


# ---- servers in child processes ------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


@dataclasses.dataclass
class Endpoint:
    """One server process: its REST port and the official gRPC stubs on one channel."""

    rest_port: int
    grpc_port: int
    channel: grpc.Channel
    predictions: prediction_service_pb2_grpc.PredictionServiceStub
    models: model_service_pb2_grpc.ModelServiceStub

    def status(self, version: int | None = None) -> get_model_status_pb2.GetModelStatusResponse:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = MODEL
        if version is not None:
            request.model_spec.version.value = version
        return self.models.GetModelStatus(request, timeout=30)

    def rest_predict(self, body: dict) -> dict:
        connection = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=60)
        try:
            connection.request("POST", f"/v1/models/{MODEL}:predict", json.dumps(body).encode())
            response = connection.getresponse()
            payload = json.loads(response.read())
            assert response.status == 200, payload
            return payload
        finally:
            connection.close()


@contextlib.contextmanager
def serving(model_base: Path, workdir: Path, *extra: str) -> Iterator[Endpoint]:
    """Start ``python -m pipeline.serving`` with gRPC, wait until it answers, always stop it."""
    rest_port, grpc_port = free_ports(2)
    command = [
        *(PYTHON, "-m", "pipeline.serving", "--model-base", str(model_base)),
        *("--model-name", MODEL, "--port", str(rest_port), "--grpc-port", str(grpc_port)),
        *("--poll-seconds", "0.5", *extra),
    ]
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    endpoint = Endpoint(
        rest_port,
        grpc_port,
        channel,
        prediction_service_pb2_grpc.PredictionServiceStub(channel),
        model_service_pb2_grpc.ModelServiceStub(channel),
    )
    log_path = workdir / f"server-{grpc_port}.log"
    try:
        with server_process(
            command, workdir, log_path, lambda: bool(endpoint.status()), (grpc.RpcError,)
        ):
            yield endpoint
    finally:
        channel.close()


def refused(call, request, timeout: float = 30) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=timeout)
    return caught.value


def logged_records(log_dir: Path) -> list[bytes]:
    return [
        record.numpy()
        for path in sorted(log_dir.glob("requests-*.tfrecord"))
        for record in tf.data.TFRecordDataset(str(path))
    ]


def logged_examples(log_dir: Path) -> list[tf.train.Example]:
    return [tf.train.Example.FromString(record) for record in logged_records(log_dir)]


# ---- requests ------------------------------------------------------------------------------


def predict_request(
    signature: str = "", version: int | None = None, label: str = "", **inputs: Any
) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label:
        request.model_spec.version_label = label
    for name, value in inputs.items():
        proto = value if isinstance(value, tensor_pb2.TensorProto) else tf.make_tensor_proto(value)
        request.inputs[name].CopyFrom(proto)
    return request


def outputs_of(response: predict_pb2.PredictResponse) -> dict[str, np.ndarray]:
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


def example_of(**features: float) -> tf.train.Example:
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                k: tf.train.Feature(float_list=tf.train.FloatList(value=[v]))
                for k, v in features.items()
            }
        )
    )


# ---- the taxi export -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def eval_batch(small_splits, taxi) -> tuple[list[bytes], list[dict]]:
    """Eval rows as serialized raw examples and as raw records (value lists)."""
    return raw_examples(taxi, small_splits["eval"], ROWS)


@pytest.fixture(scope="module")
def in_process(trained_export, eval_batch, taxi) -> dict[str, dict[str, np.ndarray]]:
    """The export's own signatures on the eval rows, called in this process."""
    _, exported = trained_export
    loaded = tf.saved_model.load(str(exported.export_dir))
    examples, records = eval_batch
    raw = {k: tf.constant(v) for k, v in raw_inputs(taxi, records).items()}
    calls = {
        "serving_default": loaded.signatures["serving_default"](examples=tf.constant(examples)),
        "serving_raw": loaded.signatures["serving_raw"](**raw),
        "transform_features": loaded.signatures["transform_features"](
            examples=tf.constant(examples)
        ),
    }
    return {name: {k: v.numpy() for k, v in out.items()} for name, out in calls.items()}


@pytest.fixture(scope="module")
def taxi_dirs(tmp_path_factory, trained_export) -> dict[str, Path]:
    trained, exported = trained_export
    root = tmp_path_factory.mktemp("grpc-taxi")
    assert push(exported.export_dir, root / "base", trained.metrics["eval"]["auc"], AUC_RULE)
    return {"root": root, "base": root / "base", "log": root / "request-log"}


@pytest.fixture(scope="module")
def taxi_server(taxi_dirs) -> Iterator[Endpoint]:
    extra = [
        *("--request-log", str(taxi_dirs["log"]), "--request-log-sample", "1.0"),
        *("--request-log-flush-seconds", "0.5", "--version-label", "stable=1"),
        *("--grpc-max-batch-size", str(MAX_BATCH), "--grpc-max-receive-bytes", str(MAX_RECEIVE)),
    ]
    with serving(taxi_dirs["base"], taxi_dirs["root"], *extra) as endpoint:
        yield endpoint


def test_model_status_lists_the_served_version(taxi_server):
    for response in (taxi_server.status(), taxi_server.status(version=1)):
        (entry,) = response.model_version_status
        assert entry.version == 1
        assert entry.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
        assert entry.status.error_code == 0 and entry.status.error_message == ""


@pytest.mark.parametrize(
    ("spec", "code", "named"),
    [
        ({"name": MODEL, "version": 9}, CODE.NOT_FOUND, "version 9"),
        ({"name": "other"}, CODE.NOT_FOUND, "other"),
        (None, CODE.INVALID_ARGUMENT, "model_spec"),
    ],
    ids=["unknown-version", "unknown-model", "no-model-spec"],
)
def test_model_status_refusals(taxi_server, spec, code, named):
    request = get_model_status_pb2.GetModelStatusRequest()
    if spec is not None:
        request.model_spec.name = spec["name"]
        if "version" in spec:
            request.model_spec.version.value = spec["version"]
    error = refused(taxi_server.models.GetModelStatus, request)
    assert error.code() == code and named in error.details()


def metadata_request(*fields: str, version: int | None = None):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=list(fields))
    request.model_spec.name = MODEL
    if version is not None:
        request.model_spec.version.value = version
    return request


def test_metadata_packs_every_signature_and_the_blessing(taxi_server, trained_export, taxi):
    trained, exported = trained_export
    response = taxi_server.predictions.GetModelMetadata(metadata_request("signature_def"))
    assert response.model_spec.name == MODEL and response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    on_disk = (
        saved_model_pb2.SavedModel.FromString(
            (Path(exported.export_dir) / "saved_model.pb").read_bytes()
        )
        .meta_graphs[0]
        .signature_def
    )
    assert dict(signatures.signature_def) == dict(on_disk)  # every one, __saved_model_init_op too
    assert {"serving_default", "serving_raw", "transform_features"} <= set(on_disk)
    assert signatures.signature_def["serving_default"].method_name == PREDICT
    raw = signatures.signature_def["serving_raw"].inputs
    assert set(raw) == {c.name for c in taxi.serving_columns}

    response = taxi_server.predictions.GetModelMetadata(metadata_request("blessing"))
    blessing = response.metadata["blessing"]
    struct = struct_pb2.Struct()
    assert blessing.Unpack(struct) and "signature_def" not in response.metadata
    assert struct["metric"] == "auc"
    assert struct["value"] == pytest.approx(trained.metrics["eval"]["auc"])


@pytest.mark.parametrize(
    ("fields", "named"), [((), "metadata_field"), (("signature_def", "nope"), "nope")]
)
def test_metadata_refusals(taxi_server, fields, named):
    error = refused(taxi_server.predictions.GetModelMetadata, metadata_request(*fields))
    assert error.code() == CODE.INVALID_ARGUMENT and named in error.details()


def test_examples_predict_equal_rest_and_the_signature_call(taxi_server, eval_batch, in_process):
    examples, _ = eval_batch
    response = taxi_server.predictions.Predict(
        predict_request(examples=tf.make_tensor_proto(examples, dtype=tf.string)), timeout=30
    )
    assert response.model_spec.signature_name == "serving_default"
    assert response.model_spec.version.value == 1
    expected = in_process["serving_default"]
    got = outputs_of(response)
    assert set(got) == {"probabilities", "classes"}
    np.testing.assert_array_equal(got["probabilities"], expected["probabilities"])
    np.testing.assert_array_equal(got["classes"], expected["classes"])
    # TF Serving's default encoding: typed value fields, which clients also read directly.
    assert list(response.outputs["probabilities"].float_val) == expected["probabilities"].tolist()

    rest = taxi_server.rest_predict(
        {"instances": [{"b64": base64.b64encode(e).decode()} for e in examples]}
    )
    rest_probabilities = np.asarray([p["probabilities"] for p in rest["predictions"]], np.float32)
    np.testing.assert_array_equal(rest_probabilities, got["probabilities"])
    assert [p["classes"] for p in rest["predictions"]] == got["classes"].tolist()


def test_raw_tensors_predict_equal_the_signature_call(taxi_server, eval_batch, in_process, taxi):
    _, records = eval_batch
    request = predict_request("serving_raw", **raw_inputs(taxi, records))
    got = outputs_of(taxi_server.predictions.Predict(request, timeout=30))
    for name, value in in_process["serving_raw"].items():
        np.testing.assert_array_equal(got[name], value)
    # The same rows as examples give the same answer (one transform graph behind both).
    np.testing.assert_allclose(
        got["probabilities"], in_process["serving_default"]["probabilities"], rtol=1e-6
    )


def test_transform_features_and_output_filter(taxi_server, eval_batch, in_process):
    examples = tf.make_tensor_proto(eval_batch[0], dtype=tf.string)
    expected = in_process["transform_features"]
    wanted = sorted(expected)[:2]
    request = predict_request("transform_features", examples=examples)
    request.output_filter.extend(wanted)
    got = outputs_of(taxi_server.predictions.Predict(request, timeout=30))
    assert sorted(got) == wanted
    for name in wanted:
        np.testing.assert_array_equal(got[name], expected[name])
    request = predict_request(examples=examples)
    request.output_filter.append("classes")
    assert set(taxi_server.predictions.Predict(request, timeout=30).outputs) == {"classes"}


def test_version_and_label_choose_the_version(taxi_server, eval_batch):
    examples = tf.make_tensor_proto(eval_batch[0][:2], dtype=tf.string)
    for request in (
        predict_request(version=1, examples=examples),
        predict_request(label="stable", examples=examples),
    ):
        assert taxi_server.predictions.Predict(request, timeout=30).model_spec.version.value == 1
    error = refused(taxi_server.predictions.Predict, predict_request(version=2, examples=examples))
    assert error.code() == CODE.NOT_FOUND and "Specific(taxi, 2)" in error.details()
    error = refused(
        taxi_server.predictions.Predict, predict_request(label="canary", examples=examples)
    )
    assert error.code() == CODE.INVALID_ARGUMENT and "version_label" in error.details()
    other = predict_request(examples=examples)
    other.model_spec.name = "other"
    error = refused(taxi_server.predictions.Predict, other)
    assert error.code() == CODE.NOT_FOUND and "model_spec.name" in error.details()


def _wrongly_typed_example() -> bytes:
    fare = tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"ten"]))
    return tf.train.Example(features=tf.train.Features(feature={"fare": fare})).SerializeToString()


def _bad_predicts(
    taxi, records
) -> list[tuple[str, predict_pb2.PredictRequest, grpc.StatusCode, str]]:
    raw = raw_inputs(taxi, records)
    one_example = tf.make_tensor_proto([b""], dtype=tf.string)

    def raw_with(**changes) -> predict_pb2.PredictRequest:
        inputs = {**raw, **changes}
        return predict_request("serving_raw", **{k: v for k, v in inputs.items() if v is not None})

    fare_bytes = tf.make_tensor_proto(raw["fare"])
    fare_bytes.tensor_content = fare_bytes.tensor_content[:-3]
    splat = tf.make_tensor_proto([b""], dtype=tf.string)
    splat.tensor_shape.dim[0].size = 10**9
    no_spec = predict_request(examples=one_example)
    no_spec.ClearField("model_spec")
    no_name = predict_request(examples=one_example)
    no_name.model_spec.name = ""
    unknown_output = predict_request(examples=one_example)
    unknown_output.output_filter.append("logits")
    twice = predict_request(examples=one_example)
    twice.output_filter.extend(["classes", "classes"])
    return [
        (
            "unknown-signature",
            predict_request("nope", examples=one_example),
            CODE.FAILED_PRECONDITION,
            '"nope"',
        ),
        (
            "missing-input",
            raw_with(fare=None),
            CODE.INVALID_ARGUMENT,
            "Missing but required: {fare}",
        ),
        (
            "extra-input",
            predict_request(examples=one_example, fare=[1.0]),
            CODE.INVALID_ARGUMENT,
            "Sent extra: {fare}",
        ),
        (
            "wrong-dtype",
            raw_with(fare=raw["fare"].astype(np.float64)),
            CODE.INVALID_ARGUMENT,
            "inputs.fare: expected dtype DT_FLOAT, got DT_DOUBLE",
        ),
        (
            "wrong-shape",
            raw_with(fare=raw["fare"].reshape(-1, 1)),
            CODE.INVALID_ARGUMENT,
            "inputs.fare: expected shape [-1]",
        ),
        (
            "batch-sizes-differ",
            raw_with(fare=raw["fare"][:-1]),
            CODE.INVALID_ARGUMENT,
            "'fare': 15",
        ),
        (
            "garbage-example",
            predict_request(examples=tf.make_tensor_proto([b"\xff\x00 not an example"])),
            CODE.INVALID_ARGUMENT,
            "inputs.examples",
        ),
        (
            "mistyped-feature",
            predict_request(examples=tf.make_tensor_proto([_wrongly_typed_example()])),
            CODE.INVALID_ARGUMENT,
            "fare",
        ),
        (
            "empty-batch",
            predict_request(
                examples=tf.make_tensor_proto(np.array([], dtype=object), dtype=tf.string)
            ),
            CODE.INVALID_ARGUMENT,
            "inputs.examples: the batch is empty",
        ),
        (
            "huge-batch",
            predict_request(examples=tf.make_tensor_proto([b""] * (MAX_BATCH + 1))),
            CODE.INVALID_ARGUMENT,
            "inputs.examples: a batch of 1001",
        ),
        (
            "huge-shape",
            predict_request(examples=splat),
            CODE.INVALID_ARGUMENT,
            "inputs.examples: shape [1000000000]",
        ),
        (
            "torn-tensor",
            raw_with(fare=fare_bytes),
            CODE.INVALID_ARGUMENT,
            "inputs.fare: tensor parsing error",
        ),
        ("unknown-output", unknown_output, CODE.INVALID_ARGUMENT, "output_filter"),
        ("output-twice", twice, CODE.INVALID_ARGUMENT, "duplicate output tensor alias: classes"),
        ("no-model-spec", no_spec, CODE.INVALID_ARGUMENT, "model_spec"),
        ("no-model-name", no_name, CODE.INVALID_ARGUMENT, "model_spec.name"),
    ]


BAD_PREDICT_IDS = [
    "unknown-signature", "missing-input", "extra-input", "wrong-dtype", "wrong-shape",
    "batch-sizes-differ", "garbage-example", "mistyped-feature", "empty-batch", "huge-batch",
    "huge-shape", "torn-tensor", "unknown-output", "output-twice", "no-model-spec",
    "no-model-name",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_PREDICT_IDS)
def test_bad_predicts_get_the_tf_serving_status_naming_the_field(
    taxi_server, eval_batch, taxi, case
):
    cases = {name: rest for name, *rest in _bad_predicts(taxi, eval_batch[1])}
    assert sorted(cases) == sorted(BAD_PREDICT_IDS)
    request, code, named = cases[case]
    error = refused(taxi_server.predictions.Predict, request)
    assert (error.code(), named in error.details()) == (code, True), error.details()
    ok = predict_request(examples=tf.make_tensor_proto(eval_batch[0][:1], dtype=tf.string))
    assert taxi_server.predictions.Predict(ok, timeout=30).outputs


def test_bytes_that_are_no_request_are_invalid_argument(taxi_server):
    # A raw call: the official stub cannot send a message that does not parse.
    call = taxi_server.channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
    with pytest.raises(grpc.RpcError) as caught:
        call(b"\x0a\xff\xff\xff\x0f garbage", timeout=30)
    assert caught.value.code() == CODE.INVALID_ARGUMENT
    assert "not a valid Predict request" in caught.value.details()


def test_oversized_message_is_resource_exhausted(taxi_server, eval_batch):
    examples = [b"x" * 1000] * (MAX_RECEIVE // 1000 + 10)
    error = refused(
        taxi_server.predictions.Predict, predict_request(examples=tf.make_tensor_proto(examples))
    )
    assert error.code() == CODE.RESOURCE_EXHAUSTED
    ok = predict_request(examples=tf.make_tensor_proto(eval_batch[0][:1], dtype=tf.string))
    assert taxi_server.predictions.Predict(ok, timeout=30).outputs


def test_classify_and_regress_need_their_signature_shapes(taxi_server, eval_batch):
    """The taxi export has no `inputs` -> `classes` or `outputs` signature: TF Serving refuses."""
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = MODEL
    classify.input.example_list.examples.add().CopyFrom(
        tf.train.Example.FromString(eval_batch[0][0])
    )
    error = refused(taxi_server.predictions.Classify, classify)
    assert error.code() == CODE.INVALID_ARGUMENT
    assert error.details().startswith("No classification inputs found in SignatureDef")
    regress = regression_pb2.RegressionRequest(model_spec=classify.model_spec, input=classify.input)
    error = refused(taxi_server.predictions.Regress, regress)
    # Checked in TF Serving's order: serving_default has two outputs before it lacks "inputs".
    assert (error.code(), error.details()) == (CODE.INVALID_ARGUMENT, "Expected one output Tensor.")
    classify.model_spec.signature_name = "nope"
    error = refused(taxi_server.predictions.Classify, classify)
    assert error.code() == CODE.INVALID_ARGUMENT
    assert error.details() == "No signature was found with the name: nope"


def test_grpc_requests_are_logged_as_the_model_received_them(
    taxi_server, taxi_dirs, eval_batch, taxi
):
    """Examples as sent; raw tensors as raw examples where a marked missing value is absent."""
    missing = {c.name: None for c in taxi.serving_columns}
    rows = [
        {**missing, "fare": 4321.5, "payment_type": "Cash", "company": "Sun Taxi"},
        {**missing, "fare": 4322.5, "payment_type": "Cash", "trip_start_hour": 7},
    ]
    raw = predict_request("serving_raw", **raw_inputs(taxi, rows))
    assert taxi_server.predictions.Predict(raw, timeout=30).outputs
    marked = tf.train.Example.FromString(eval_batch[0][0])
    marked.features.feature["fare"].float_list.value[:] = [1234.5]
    sent = marked.SerializeToString()
    by_example = predict_request(examples=tf.make_tensor_proto([sent], dtype=tf.string))
    assert taxi_server.predictions.Predict(by_example, timeout=30).outputs

    def logged(*fares: float) -> list[bytes]:
        found = []
        for record in logged_records(taxi_dirs["log"]):
            fare = tf.train.Example.FromString(record).features.feature["fare"].float_list.value
            if list(fare) in ([f] for f in fares):
                found.append(record)
        return found

    from_raw = wait_for(lambda: len(logged(4321.5, 4322.5)) == 2 and logged(4321.5, 4322.5))
    first, second = (tf.train.Example.FromString(r).features.feature for r in from_raw)
    assert sorted(first) == ["company", "fare", "payment_type"]  # the missing ones are absent
    assert sorted(second) == ["fare", "payment_type", "trip_start_hour"]
    assert first["company"].bytes_list.value == [b"Sun Taxi"]
    assert second["trip_start_hour"].int64_list.value == [7]
    assert wait_for(lambda: logged(1234.5), what="the example request") == [sent]  # as sent

    # TFDV, as the serving-log check runs it, counts the absent values as missing.
    from tensorflow_data_validation.statistics.stats_impl import generate_statistics_in_memory
    from tfx_bsl.coders import example_coder

    batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(from_raw)
    stats = generate_statistics_in_memory(batch).datasets[0]
    common = {
        f.path.step[0]: (f.num_stats if f.HasField("num_stats") else f.string_stats).common_stats
        for f in stats.features
    }
    assert (common["company"].num_missing, common["trip_start_hour"].num_missing) == (1, 1)
    assert common["fare"].num_missing == 0 and common["fare"].min_num_values == 1


def test_the_readme_client_snippet_runs(taxi_server, capsys):
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("### Serving over gRPC") :]
    snippet = section[section.index("```python\n") + len("```python\n") :]
    snippet = snippet[: snippet.index("```")]
    assert "localhost:8500" in snippet
    exec(snippet.replace("localhost:8500", f"127.0.0.1:{taxi_server.grpc_port}"), {})
    printed = capsys.readouterr().out
    assert printed.startswith("1 [0.") and "state: AVAILABLE" in printed


def test_pushed_version_is_picked_up(taxi_server, taxi_dirs, trained_export, eval_batch):
    """Last among the taxi server's tests: it leaves version 2 serving."""
    trained, exported = trained_export
    assert push(
        exported.export_dir, taxi_dirs["base"], trained.metrics["eval"]["auc"], AUC_RULE, version=2
    ).blessed
    wait_for(
        lambda: {s.version for s in taxi_server.status().model_version_status} == {1, 2},
        what="version 2",
    )
    examples = tf.make_tensor_proto(eval_batch[0], dtype=tf.string)
    newest = taxi_server.predictions.Predict(predict_request(examples=examples), timeout=30)
    first = taxi_server.predictions.Predict(
        predict_request(version=1, examples=examples), timeout=30
    )
    assert (newest.model_spec.version.value, first.model_spec.version.value) == (2, 1)
    assert (
        outputs_of(newest)["probabilities"].tolist() == outputs_of(first)["probabilities"].tolist()
    )
    metadata = taxi_server.predictions.GetModelMetadata(metadata_request("signature_def"))
    assert metadata.model_spec.version.value == 2


# ---- an export with classify and regress signatures ----------------------------------------

TOY_METHODS = {
    "classification": CLASSIFY,
    "regression": REGRESS,
    "bad_classes": CLASSIFY,
    "other_method": "example/other",
}


def write_toy_export(directory: Path) -> Path:
    """p = sigmoid(2x - 1) of a float feature ``x``, behind TF Serving's signature kinds.

    ``classification`` (``inputs`` -> ``classes``, ``scores``) and ``regression`` (``inputs`` ->
    ``outputs`` = 3x + 1) get their method names as TF1/Estimator exports carry them;
    ``classification_tf2`` is the same function with TensorFlow 2's ``predict`` method name;
    ``bad_classes`` returns integer classes; ``other_method`` has a method of no TF Serving API;
    ``slow`` busy-waits ``seconds``.
    """
    spec = {"x": tf.io.FixedLenFeature([], tf.float32, default_value=0.0)}
    module = tf.Module()
    module.weight, module.bias = tf.Variable(2.0), tf.Variable(-1.0)

    def x_of(serialized):
        return tf.io.parse_example(serialized, spec)["x"]

    def scored(serialized):
        p = tf.sigmoid(module.weight * x_of(serialized) + module.bias)
        labels = tf.tile(tf.constant([[b"no", b"yes"]]), [tf.shape(p)[0], 1])
        return {"classes": labels, "scores": tf.stack([1.0 - p, p], axis=1)}

    strings = [tf.TensorSpec([None], tf.string)]

    @tf.function(input_signature=strings)
    def serving_default(examples):
        return {"scores": scored(examples)["scores"], "value": 3.0 * x_of(examples) + 1.0}

    @tf.function(input_signature=strings)
    def classification(inputs):
        return scored(inputs)

    @tf.function(input_signature=strings)
    def classification_tf2(inputs):
        return scored(inputs)

    @tf.function(input_signature=strings)
    def regression(inputs):
        return {"outputs": 3.0 * x_of(inputs) + 1.0}

    @tf.function(input_signature=strings)
    def bad_classes(inputs):
        result = scored(inputs)
        return {
            "classes": tf.zeros(tf.shape(result["scores"]), tf.int64),
            "scores": result["scores"],
        }

    @tf.function(input_signature=strings)
    def other_method(examples):
        return {"value": 3.0 * x_of(examples) + 1.0}

    @tf.function(input_signature=[tf.TensorSpec([], tf.float32)])
    def slow(seconds):
        start = tf.timestamp()
        (iterations,) = tf.while_loop(
            lambda n: tf.timestamp() - start < tf.cast(seconds, tf.float64),
            lambda n: (n + 1,),
            (tf.constant(0, tf.int64),),
        )
        return {"iterations": iterations}

    functions = [
        *(serving_default, classification, classification_tf2, regression),
        *(bad_classes, other_method, slow),
    ]
    signatures = {f.__name__: f.get_concrete_function() for f in functions}
    tf.saved_model.save(module, str(directory), signatures=signatures)
    path = directory / "saved_model.pb"
    proto = saved_model_pb2.SavedModel.FromString(path.read_bytes())
    for name, method in TOY_METHODS.items():
        proto.meta_graphs[0].signature_def[name].method_name = method
    path.write_bytes(proto.SerializeToString())
    return directory


@pytest.fixture(scope="module")
def toy_export(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grpc-toy")
    return write_toy_export(root / "base" / "1")


@pytest.fixture(scope="module")
def toy_server(toy_export) -> Iterator[tuple[Endpoint, Path]]:
    root = toy_export.parents[1]
    extra = [
        *("--request-log", str(root / "request-log"), "--request-log-sample", "1.0"),
        *("--request-log-flush-seconds", "0.5", "--enable-signature-method-name-check"),
        *("--grpc-threads", "1", "--grpc-max-concurrent-rpcs", "2"),
    ]
    with serving(toy_export.parent, root, *extra) as endpoint:
        yield endpoint, root / "request-log"


XS = [0.0, 0.5, 2.0]


def toy_input(xs, context: dict | None = None):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = MODEL
    if context is None:
        for x in xs:
            request.input.example_list.examples.add().CopyFrom(
                example_of(x=x) if x is not None else tf.train.Example()
            )
    else:
        with_context = request.input.example_list_with_context
        with_context.context.CopyFrom(example_of(**context))
        for x in xs:
            with_context.examples.add().CopyFrom(
                example_of(x=x) if x is not None else tf.train.Example()
            )
    return request


@pytest.fixture(scope="module")
def toy_in_process(toy_export) -> dict[str, dict[str, np.ndarray]]:
    loaded = tf.saved_model.load(str(toy_export))
    serialized = tf.constant([example_of(x=x).SerializeToString() for x in XS])
    return {
        name: {k: v.numpy() for k, v in loaded.signatures[name](inputs=serialized).items()}
        for name in ("classification", "regression")
    }


def test_classify_regress_and_multi_inference(toy_server, toy_in_process):
    endpoint, _ = toy_server
    request = toy_input(XS)
    request.model_spec.signature_name = "classification"
    response = endpoint.predictions.Classify(request, timeout=30)
    assert response.model_spec.signature_name == "classification"
    assert response.model_spec.version.value == 1
    expected = toy_in_process["classification"]
    labels = [[c.label for c in row.classes] for row in response.result.classifications]
    scores = np.array(
        [[c.score for c in row.classes] for row in response.result.classifications], np.float32
    )
    assert labels == expected["classes"].astype(str).tolist() == [["no", "yes"]] * len(XS)
    np.testing.assert_array_equal(scores, expected["scores"])

    # The context's features reach every example; an example's own value wins.
    merged = toy_input([None, 0.5], context={"x": 2.0})
    merged.model_spec.signature_name = "classification"
    result = endpoint.predictions.Classify(merged, timeout=30).result.classifications
    assert [row.classes[1].score for row in result] == [scores[2][1], scores[1][1]]

    regress = regression_pb2.RegressionRequest(input=toy_input(XS).input)
    regress.model_spec.name, regress.model_spec.signature_name = MODEL, "regression"
    values = [r.value for r in endpoint.predictions.Regress(regress, timeout=30).result.regressions]
    np.testing.assert_array_equal(np.float32(values), toy_in_process["regression"]["outputs"])

    multi = inference_pb2.MultiInferenceRequest(input=toy_input(XS).input)
    for name, method in (("classification", CLASSIFY), ("regression", REGRESS)):
        task = multi.tasks.add(method_name=method)
        task.model_spec.name, task.model_spec.signature_name = MODEL, name
    both = endpoint.predictions.MultiInference(multi, timeout=30).results
    assert [r.model_spec.signature_name for r in both] == ["classification", "regression"]
    assert both[0].classification_result == response.result
    assert [r.value for r in both[1].regression_result.regressions] == values


def _classify(signature: str, xs=XS) -> classification_pb2.ClassificationRequest:
    request = toy_input(xs)
    request.model_spec.signature_name = signature
    return request


def _multi(*tasks: tuple[str, str, str]) -> inference_pb2.MultiInferenceRequest:
    request = inference_pb2.MultiInferenceRequest(input=toy_input(XS).input)
    for model, signature, method in tasks:
        task = request.tasks.add(method_name=method)
        task.model_spec.name, task.model_spec.signature_name = model, signature
    return request


def _regress(signature: str) -> regression_pb2.RegressionRequest:
    request = regression_pb2.RegressionRequest(input=toy_input(XS).input)
    request.model_spec.name, request.model_spec.signature_name = MODEL, signature
    return request


CLASSIFY_TASK = (MODEL, "classification", CLASSIFY)
TOY_REFUSALS = {
    "classify-a-regression": (
        "Classify",
        lambda: _classify("regression"),
        CODE.INVALID_ARGUMENT,
        f"Expected classification signature method_name to be {CLASSIFY}. Was: {REGRESS}",
    ),
    "classify-tf2-method": (
        "Classify",
        lambda: _classify("classification_tf2"),
        CODE.INVALID_ARGUMENT,
        f"Was: {PREDICT}",
    ),
    "regress-a-classification": (
        "Regress",
        lambda: _regress("classification"),
        CODE.INVALID_ARGUMENT,
        f"Expected regression signature method_name to be {REGRESS}. Was: {CLASSIFY}",
    ),
    "integer-classes": (
        "Classify",
        lambda: _classify("bad_classes"),
        CODE.INVALID_ARGUMENT,
        "Expected classes Tensor of DT_STRING. Got: DT_INT64",
    ),
    "empty-input": (
        "Classify",
        lambda: _classify("classification", xs=[]),
        CODE.INVALID_ARGUMENT,
        "Input is empty. (input",
    ),
    "multi-predict-task": (
        "MultiInference",
        lambda: _multi((MODEL, "classification", PREDICT)),
        CODE.UNIMPLEMENTED,
        f"Unsupported signature method_name: {PREDICT} (tasks[0].method_name)",
    ),
    "multi-twice": (
        "MultiInference",
        lambda: _multi(CLASSIFY_TASK, CLASSIFY_TASK),
        CODE.INVALID_ARGUMENT,
        "Duplicate evaluation of signature: classification (tasks[1])",
    ),
    "multi-two-models": (
        "MultiInference",
        lambda: _multi(CLASSIFY_TASK, ("other", "regression", REGRESS)),
        CODE.INVALID_ARGUMENT,
        "must access the same model name. (tasks[1].model_spec.name",
    ),
    "multi-no-tasks": (
        "MultiInference",
        _multi,
        CODE.INVALID_ARGUMENT,
        "ModelSpec has no name specified. (model_spec.name)",
    ),
    "multi-unknown-signature": (
        "MultiInference",
        lambda: _multi((MODEL, "nope", CLASSIFY)),
        CODE.INVALID_ARGUMENT,
        "Requested signature not found in model graph: nope (tasks[0])",
    ),
    "predict-other-method": (
        "Predict",
        lambda: predict_request("other_method", examples=[b""]),
        CODE.FAILED_PRECONDITION,
        "Expected prediction signature method_name to be one of",
    ),
    "slow-takes-a-float": (
        "Predict",
        lambda: predict_request("slow", seconds=np.float64(0.1)),
        CODE.INVALID_ARGUMENT,
        "inputs.seconds: expected dtype DT_FLOAT, got DT_DOUBLE",
    ),
}


@pytest.mark.parametrize("case", sorted(TOY_REFUSALS))
def test_signature_method_rules_with_the_method_name_check(toy_server, case):
    endpoint, _ = toy_server
    method, request, code, named = TOY_REFUSALS[case]
    error = refused(getattr(endpoint.predictions, method), request())
    assert (error.code(), named in error.details()) == (code, True), error.details()


def test_model_config_reload_is_unimplemented(toy_server):
    endpoint, _ = toy_server
    error = refused(
        endpoint.models.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest()
    )
    assert error.code() == CODE.UNIMPLEMENTED and "model base" in error.details()


def test_rules_without_the_method_name_check_follow_the_signature_shape(toy_export):
    """TF Serving's default: TF2's ``predict``-named classification signature is accepted."""
    defs = read_signature_defs(toy_export)
    rules = SignatureRules(method_name_check=False)
    rules.check_classification(defs["classification_tf2"])
    rules.check_regression(defs["regression"])
    expected = {
        ("check_classification", "regression"): 'at least one of "classes" or "scores"',
        ("check_classification", "serving_default"): "No classification inputs found",
        ("check_regression", "classification"): "Expected one output Tensor.",
    }
    for (check, name), message in expected.items():
        with pytest.raises(RpcError) as caught:
            getattr(rules, check)(defs[name])
        assert caught.value.code == CODE.INVALID_ARGUMENT and message in caught.value.message
    with pytest.raises(RpcError, match="Was: tensorflow/serving/predict"):
        SignatureRules(method_name_check=True).check_classification(defs["classification_tf2"])


def test_deadlines_and_the_concurrency_cap(toy_server):
    """One thread and two calls at most: a slow call runs, a second waits, a third is refused."""
    endpoint, log_dir = toy_server

    def slow(seconds: float):
        return predict_request("slow", seconds=np.float32(seconds))

    def marked(x: float):
        return predict_request(examples=tf.make_tensor_proto([example_of(x=x).SerializeToString()]))

    error = refused(endpoint.predictions.Predict, slow(1.0), timeout=0.3)
    assert error.code() == CODE.DEADLINE_EXCEEDED
    endpoint.status()  # waits behind the slow call, which the server still finishes

    outcomes: dict[str, Any] = {}

    def call(name: str, request, timeout: float) -> None:
        try:
            outcomes[name] = endpoint.predictions.Predict(request, timeout=timeout)
        except grpc.RpcError as error:
            outcomes[name] = error.code()

    running = threading.Thread(target=call, args=("running", slow(1.5), 30))
    waiting = threading.Thread(target=call, args=("waiting", marked(777.0), 0.6))
    running.start()
    time.sleep(0.3)
    waiting.start()
    time.sleep(0.2)
    error = refused(endpoint.predictions.Predict, marked(999.0))
    assert error.code() == CODE.RESOURCE_EXHAUSTED
    running.join(30)
    waiting.join(30)
    assert outcomes["waiting"] == CODE.DEADLINE_EXCEEDED
    assert outputs_of(outcomes["running"])["iterations"] > 0

    assert endpoint.predictions.Predict(marked(888.0), timeout=30).outputs

    def logged_xs() -> list[float]:
        return [
            v for e in logged_examples(log_dir) for v in e.features.feature["x"].float_list.value
        ]

    wait_for(lambda: 888.0 in logged_xs(), what="the last call in the request log")
    # The call that waited past its deadline and the one over the cap never ran.
    assert 777.0 not in logged_xs() and 999.0 not in logged_xs()


def test_work_past_the_deadline_stops_before_the_model():
    """grpcio drops a call whose client gave up before its handler started (the waiting call
    above); a call whose deadline passes inside the handler, e.g. while a large request is
    parsed, is stopped by the servicers' check before the model runs."""
    from concurrent import futures

    from pipeline.serving.grpc_service import answer

    ran: list[bool] = []

    def handler(request: bytes, context: grpc.ServicerContext) -> bytes:
        time.sleep(0.5)  # the work before the model
        return answer(context, lambda: ran.append(True) or b"")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "check", {"run": grpc.unary_unary_rpc_method_handler(handler)}
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/check/run")
            with pytest.raises(grpc.RpcError) as caught:
                call(b"", timeout=0.2)
            assert caught.value.code() == CODE.DEADLINE_EXCEEDED
            time.sleep(0.6)
            assert ran == []
            assert call(b"", timeout=30) == b"" and ran == [True]
    finally:
        server.stop(None)
