"""The REST server over real HTTP on loopback, in a child process, against real exports.

Checks TensorFlow Serving's REST API as its documentation and source define it (each row of the
README's compatibility table names its test here): status and metadata of every signature,
predict in row and columnar form on every signature (``serving_raw``'s named raw tensors
included), classify and regress with TF Serving's signature rules and messages, ``b64``, the
JSON number tokens, version labels, and ``{"error": ...}`` answers that name the bad field while
the server keeps serving. A small hand-built SavedModel with regression and multi-class
signatures covers the API kinds the taxi export (a binary head) does not have.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from pipeline.export import (
    CLASSIFICATION_SIGNATURE,
    EXAMPLES_INPUT,
    MISSING_VALUES,
    RAW_SIGNATURE,
    SERVING_SIGNATURE,
    TRANSFORM_SIGNATURE,
    raw_instances,
)
from pipeline.predict import raw_examples
from pipeline.push import BlessingRule, push
from pipeline.serving.errors import BadRequest, NotFound
from pipeline.serving.examples import ExampleEncoder
from pipeline.serving.models import SINGLE_THREADED_EXECUTOR, ModelRegistry, load_version
from pipeline.serving.protocol import dumps, output_json
from pipeline.serving.service import ServingService
from tests.serving_client import (
    MODEL,
    TOY_LABELS,
    Client,
    running_server,
    wait_for,
    write_toy_export,
)

pytestmark = pytest.mark.slow

AUC_RULE = BlessingRule("auc", higher_is_better=True, floor=0.5, tolerance=0.01)

ROWS = 16
MAX_BODY = 200_000
PREDICT = f"/v1/models/{MODEL}:predict"
CLASSIFY = f"/v1/models/{MODEL}:classify"
REGRESS = f"/v1/models/{MODEL}:regress"


# ---- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def eval_rows(small_splits, taxi) -> tuple[list[bytes], list[dict], list[dict]]:
    """Eval rows as serialized raw examples, as the JSON objects a client would send, and as
    the records (column -> list of at most one value) they came from."""
    examples, records = raw_examples(taxi, small_splits["eval"], ROWS)
    rows = []
    for record in records:
        row = {}
        for name, values in record.items():
            if values:  # a missing value is left out (the JSON null case is tested apart)
                row[name] = values[0].decode() if isinstance(values[0], bytes) else values[0]
        rows.append(row)
    return examples, rows, records


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
        *("--version-label", "stable=1", "--version-label", "canary=2"),
    ]
    with running_server(server_dirs["base"], server_dirs["root"], *extra) as running:
        yield running


@pytest.fixture(scope="module")
def toy_base(tmp_path_factory) -> Path:
    return write_toy_export(tmp_path_factory.mktemp("toy") / "base")


@pytest.fixture(scope="module")
def toy_client(toy_base, tmp_path_factory) -> Iterator[Client]:
    with running_server(toy_base, tmp_path_factory.mktemp("toy-run")) as running:
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


def served_versions(client: Client) -> set[str]:
    status, body = client.get(f"/v1/models/{MODEL}")
    assert status == 200, body
    return {s["version"] for s in body["model_version_status"] if s["state"] == "AVAILABLE"}


# ---- status and metadata ---------------------------------------------------------------------

AVAILABLE = {
    "version": "1",
    "state": "AVAILABLE",
    "status": {"error_code": "OK", "error_message": ""},
}


def test_status_in_tf_serving_format(client):
    assert client.get(f"/v1/models/{MODEL}") == (200, {"model_version_status": [AVAILABLE]})
    assert client.get(f"/v1/models/{MODEL}/versions/1") == (
        200,
        {"model_version_status": [AVAILABLE]},
    )
    assert client.get(f"/V1/Models/{MODEL}")[0] == 200  # TF Serving's paths ignore case
    assert client.get(f"/v1/models/{MODEL}/versions/9") == (
        404,
        {"error": f"Could not find version 9 of model {MODEL}"},
    )
    assert client.get("/v1/models/other") == (
        404,
        {"error": "Could not find any versions of model other"},
    )
    assert client.get("/v1/models") == (400, {"error": "Missing model name in request."})


def test_version_labels_name_versions(client, eval_rows, expected):
    assert client.get(f"/v1/models/{MODEL}/labels/stable") == (
        200,
        {"model_version_status": [AVAILABLE]},
    )
    examples, _, _ = eval_rows
    body = {"instances": [b64(e) for e in examples]}
    status, answer = client.post(f"/v1/models/{MODEL}/labels/stable:predict", body)
    assert status == 200, answer
    assert_matches(*row_outputs(answer), expected)
    status, answer = client.post(f"/v1/models/{MODEL}/labels/canary:predict", body)
    assert status == 404 and "Specific(taxi, 2)" in answer["error"]  # labelled, not loaded
    assert client.post(f"/v1/models/{MODEL}/labels/beta:predict", body) == (
        400,
        {"error": "Unrecognized servable version label: beta"},
    )
    assert client.get(f"/v1/models/{MODEL}/labels/stable/metadata")[0] == 200


def test_metadata_lists_every_signature(client, taxi):
    status, body = client.get(f"/v1/models/{MODEL}/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": MODEL, "signature_name": "", "version": "1"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {
        "__saved_model_init_op",
        SERVING_SIGNATURE,
        RAW_SIGNATURE,
        TRANSFORM_SIGNATURE,
        CLASSIFICATION_SIGNATURE,
    }
    default = signatures[SERVING_SIGNATURE]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"][EXAMPLES_INPUT]["dtype"] == "DT_STRING"
    assert default["inputs"][EXAMPLES_INPUT]["tensor_shape"] == {
        "dim": [{"size": "-1", "name": ""}],
        "unknown_rank": False,
    }
    assert default["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"
    assert default["outputs"]["classes"]["dtype"] == "DT_INT64"
    raw = signatures[RAW_SIGNATURE]
    assert raw["method_name"] == "tensorflow/serving/predict"
    assert set(raw["inputs"]) == {c.name for c in taxi.serving_columns}
    assert raw["inputs"]["fare"]["dtype"] == "DT_FLOAT"
    assert raw["inputs"]["company"]["dtype"] == "DT_STRING"
    classification = signatures[CLASSIFICATION_SIGNATURE]
    assert classification["method_name"] == "tensorflow/serving/classify"
    assert list(classification["inputs"]) == ["inputs"]
    assert classification["outputs"]["classes"]["dtype"] == "DT_STRING"
    assert classification["outputs"]["scores"]["dtype"] == "DT_FLOAT"
    features = {f["name"]: f["dtype"] for f in body["metadata"]["raw_features"]}
    assert list(features) == [c.name for c in taxi.serving_columns]
    assert features["fare"] == "DT_FLOAT" and "tips" not in features
    assert client.get(f"/v1/models/{MODEL}/versions/1/metadata")[0] == 200


# ---- predict ---------------------------------------------------------------------------------


def test_b64_rows_equal_the_exports_own_predictions(client, eval_rows, expected):
    examples, _, _ = eval_rows
    status, body = client.post(PREDICT, {"instances": [b64(e) for e in examples]})
    assert status == 200, body
    assert_matches(*row_outputs(body), expected)
    named = {"instances": [{EXAMPLES_INPUT: b64(e)} for e in examples]}
    assert row_outputs(client.post(PREDICT, named)[1]) == row_outputs(body)


def test_json_rows_equal_the_exports_own_predictions(client, eval_rows, expected):
    _, rows, _ = eval_rows
    assert any(len(row) < len(rows[0]) for row in rows), "eval rows should miss some features"
    status, body = client.post(PREDICT, {"instances": rows, "signature_name": SERVING_SIGNATURE})
    assert status == 200, body
    assert_matches(*row_outputs(body), expected)


def test_columnar_formats_equal_the_exports_own_predictions(client, eval_rows, expected, taxi):
    examples, rows, _ = eval_rows
    columns = {c.name: [row.get(c.name) for row in rows] for c in taxi.serving_columns}
    status, body = client.post(PREDICT, {"inputs": columns})
    assert status == 200, body
    assert_matches(body["outputs"]["probabilities"], body["outputs"]["classes"], expected)
    for inputs in ({EXAMPLES_INPUT: [b64(e) for e in examples]}, [b64(e) for e in examples]):
        status, body = client.post(PREDICT, {"inputs": inputs})
        assert status == 200, body
        assert_matches(body["outputs"]["probabilities"], body["outputs"]["classes"], expected)


def test_serving_raw_takes_named_raw_tensors(client, eval_rows, expected, taxi):
    """TF Serving's row and columnar formats on ``serving_raw``, missing values as markers; the
    body carries the bare ``NaN`` token, as TF Serving's JSON allows."""
    _, _, records = eval_rows
    instances = raw_instances(taxi, records)
    body = json.dumps({"signature_name": RAW_SIGNATURE, "instances": instances})
    assert "NaN" in body and str(MISSING_VALUES["INT64"]) in body
    status, answer = client.post(PREDICT, body.encode())
    assert status == 200, answer
    assert_matches(*row_outputs(answer), expected)
    columns = {name: [i[name] for i in instances] for name in instances[0]}
    status, answer = client.post(PREDICT, {"signature_name": RAW_SIGNATURE, "inputs": columns})
    assert status == 200, answer
    assert_matches(answer["outputs"]["probabilities"], answer["outputs"]["classes"], expected)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda i: i.pop("fare"), "instances[0]: keys must be equal"),
        (lambda i: i.update(tips=1.0), "unknown ['tips']"),
        (lambda i: i.update(fare="12"), "instances[0].fare: expected a number"),
        (lambda i: i.update(fare=math.inf), "instances[0].fare: inf is not a finite float32"),
        (lambda i: i.update(fare=1e300), "instances[0].fare: 1e+300 is not a finite float32"),
        (lambda i: i.update(trip_seconds=2**63), "instances[0].trip_seconds: integer out of INT64"),
        (lambda i: i.update(company=7), "instances[0].company: expected a string"),
    ],
    ids=["missing input", "extra input", "string fare", "Infinity", "overflow", "int64", "company"],
)
def test_serving_raw_refuses_what_its_tensors_cannot_hold(client, eval_rows, taxi, change, named):
    instance = raw_instances(taxi, eval_rows[2][:1])[0]
    change(instance)
    body = json.dumps({"signature_name": RAW_SIGNATURE, "instances": [instance]})
    status, answer = client.post(PREDICT, body.encode())
    assert status == 400 and named in answer["error"], answer


def test_every_signature_answers_predict(client, eval_rows, taxi):
    examples, rows, _ = eval_rows
    body = {"instances": rows[:2], "signature_name": TRANSFORM_SIGNATURE}
    status, answer = client.post(PREDICT, body)
    assert status == 200, answer
    assert set(answer["predictions"][0]) == {f.output_name for f in taxi.features}
    body = {"instances": [b64(e) for e in examples[:2]], "signature_name": CLASSIFICATION_SIGNATURE}
    status, answer = client.post(PREDICT, body)
    assert status == 200, answer
    assert [p["classes"] for p in answer["predictions"]] == [["0", "1"]] * 2
    assert client.post(PREDICT, {"instances": [{}], "signature_name": "nope"}) == (
        400,
        {"error": 'Serving signature name: "nope" not found in signature def'},
    )
    status, answer = client.post(
        PREDICT, {"instances": [{}], "signature_name": "__saved_model_init_op"}
    )
    assert status == 400 and "Failed to get input map" in answer["error"]


def test_versioned_route_answers_like_the_default(client, eval_rows, expected):
    examples, _, _ = eval_rows
    body = {"instances": [b64(e) for e in examples]}
    status, answer = client.post(f"/v1/models/{MODEL}/versions/1:predict", body)
    assert status == 200
    assert_matches(*row_outputs(answer), expected)
    status, answer = client.post(f"/v1/models/{MODEL}/versions/2:predict", body)
    assert status == 404 and "Servable not found for request: Specific(taxi, 2)" in answer["error"]
    status, answer = client.post("/v1/models/other:predict", body)
    assert status == 404 and "Servable not found for request: Latest(other)" in answer["error"]


def test_missing_and_null_features_still_predict(client):
    instances = [{}, {"fare": 12.5}, {"fare": None, "company": [], "payment_type": ["Cash"]}]
    status, body = client.post(PREDICT, {"instances": instances})
    assert status == 200, body
    probabilities, _ = row_outputs(body)
    assert len(probabilities) == 3 and all(0.0 <= p <= 1.0 for p in probabilities)


# ---- classify and regress --------------------------------------------------------------------


def test_classify_returns_labels_and_scores(client, eval_rows, expected):
    _, rows, _ = eval_rows
    body = {"signature_name": CLASSIFICATION_SIGNATURE, "examples": rows}
    status, answer = client.post(CLASSIFY, body)
    assert status == 200, answer
    results = answer["results"]
    assert [[label for label, _ in result] for result in results] == [["0", "1"]] * ROWS
    positive = np.asarray([result[1][1] for result in results], np.float32)
    np.testing.assert_allclose(positive, expected["probabilities"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose([r[0][1] + r[1][1] for r in results], 1.0, rtol=1e-6)
    context = {"payment_type": rows[0]["payment_type"]}
    examples = [{k: v for k, v in rows[0].items() if k != "payment_type"}]
    body = {"signature_name": CLASSIFICATION_SIGNATURE, "examples": examples, "context": context}
    status, answer = client.post(f"/v1/models/{MODEL}/versions/1:classify", body)
    assert status == 200, answer
    assert answer["results"][0][1][1] == pytest.approx(float(expected["probabilities"][0]), 1e-6)


def test_classify_and_regress_refuse_signatures_of_another_kind(client, eval_rows):
    """TF Serving's ``PreProcessClassification`` / ``PreProcessRegression`` and its messages."""
    _, rows, _ = eval_rows
    status, answer = client.post(CLASSIFY, {"examples": rows[:1]})  # serving_default: predict
    assert status == 400
    assert answer["error"].startswith("No classification inputs found in SignatureDef: inputs {")
    assert 'method_name: "tensorflow/serving/predict"' in answer["error"]
    body = {"signature_name": CLASSIFICATION_SIGNATURE, "examples": rows[:1]}
    assert client.post(REGRESS, body) == (400, {"error": "Expected one output Tensor."})
    assert client.post(CLASSIFY, {"signature_name": "nope", "examples": rows[:1]}) == (
        400,
        {"error": "No signature was found with the name: nope"},
    )
    assert client.post(CLASSIFY, {"signature_name": CLASSIFICATION_SIGNATURE}) == (
        400,
        {"error": "When method is classify, key 'examples' is expected and was not found"},
    )


def test_regress_and_multi_class_classify(toy_client):
    """The documented half_plus_three call, and a classifier with k = 3 labels."""
    regress = f"/v1/models/{MODEL}:regress"
    body = {"signature_name": "regression", "examples": [{"fare": 1.0}, {"fare": 2.0}, {}]}
    assert toy_client.post(regress, body) == (200, {"results": [3.5, 4.0, 3.5]})
    body = {"signature_name": CLASSIFICATION_SIGNATURE, "examples": [{"fare": 1.0}]}
    status, answer = toy_client.post(f"/v1/models/{MODEL}:classify", body)
    assert status == 200, answer
    ((low, mid, high),) = answer["results"]
    assert [low[0], mid[0], high[0]] == list(TOY_LABELS)
    softmax = np.exp([1.0, 2.0, 3.0]) / np.exp([1.0, 2.0, 3.0]).sum()
    np.testing.assert_allclose([low[1], mid[1], high[1]], softmax, rtol=1e-6)
    # The TF-Serving default: no method-name check, so a classifier saved as predict classifies.
    body["signature_name"] = "classification_as_predict"
    assert toy_client.post(f"/v1/models/{MODEL}:classify", body)[1] == answer
    body["signature_name"] = "regression"
    status, answer = toy_client.post(f"/v1/models/{MODEL}:classify", body)
    assert status == 400 and answer["error"].startswith(
        'Expected classification signature outputs to contain at least one of "classes" or '
        '"scores". Signature was: inputs {'
    )


def test_method_name_check_refuses_a_classifier_saved_as_predict(toy_base, taxi):
    registry = ModelRegistry(toy_base)
    registry.refresh()
    strict = ServingService(MODEL, taxi, registry, method_name_check=True)
    body = {"signature_name": "classification_as_predict", "examples": [{"fare": 1.0}]}
    with pytest.raises(BadRequest) as refused:
        strict.classify(MODEL, None, json.dumps(body).encode())
    assert str(refused.value) == (
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/predict"
    )
    body = {"signature_name": "regression", "examples": [{"fare": 1.0}]}
    assert json.loads(strict.regress(MODEL, None, json.dumps(body).encode())) == {"results": [3.5]}
    body["signature_name"] = CLASSIFICATION_SIGNATURE
    with pytest.raises(BadRequest, match="regression signature method_name to be"):
        strict.regress(MODEL, None, json.dumps(body).encode())


# ---- JSON numbers and binary values ----------------------------------------------------------


def test_non_finite_outputs_are_written_as_tf_serving_tokens(toy_client):
    status, raw = toy_client.raw("POST", PREDICT, {"instances": [{"fare": 0.0}, {"fare": 1.0}]})
    assert status == 200 and b"-Infinity" in raw and b"null" not in raw
    predictions = json.loads(raw)["predictions"]
    assert predictions[0]["log_fare"] == -math.inf and predictions[1]["log_fare"] == 0.0


def test_bare_nan_tokens_parse_and_non_finite_values_are_refused(client):
    """TF Serving's parser reads NaN/Infinity; the model's float32 must still be finite."""
    body = b'{"instances": [{"fare": 10.0}, {"fare": Infinity}]}'
    assert client.post(PREDICT, body) == (
        400,
        {"error": "instances[1].fare: inf is not a finite float32 (DT_FLOAT) value"},
    )
    status, answer = client.post(PREDICT, b'{"instances": [{"fare": NaN}]}')
    assert status == 400 and "instances[0].fare: NaN is not a value" in answer["error"]
    status, answer = client.post(PREDICT, b'{"instances": [{"fare": -Infinity, "trip_miles": 1}]}')
    assert status == 400 and "instances[0].fare" in answer["error"]
    for token in (b"-Inf", b"Inf", b"-NaN"):  # RapidJSON's spellings
        status, answer = client.post(PREDICT, b'{"instances": [{"fare": %s}]}' % token)
        assert status == 400 and "instances[0].fare" in answer["error"], (token, answer)


def test_bytes_outputs_are_b64_and_strings_text():
    """TF Serving writes a DT_STRING output named ``*_bytes`` as ``{"b64": ...}``."""
    tensor = np.array([[b"\xff\x00", b"ok"]], dtype=object)
    assert output_json("image_bytes", tensor) == [[{"b64": "/wA="}, {"b64": "b2s="}]]
    assert output_json("classes", np.array([b"0", b"1"], dtype=object)) == ["0", "1"]
    assert dumps({"x": np.array([np.float32(0.1), np.nan], np.float32)}, True) == (
        b'{"x":[0.1,NaN]}'
    )


# ---- bad requests ----------------------------------------------------------------------------

BAD_REQUESTS = [
    ({"instances": [{"fare": 12.5, "fair": 3}]}, "'fair'"),
    ({"instances": [{"fare": 12.5}, {"fare": "12.5"}]}, "instances[1].fare"),
    ({"instances": [{"trip_start_hour": 7.5}]}, "instances[0].trip_start_hour"),
    ({"instances": [{"company": 17}]}, "instances[0].company"),
    ({"instances": [{"tips": 2.0}]}, "'tips'"),
    ({"instances": [{"fare": [1.0, 2.0]}]}, "instances[0].fare"),
    ({"instances": []}, "No values in 'instances' array"),
    ({"instances": [{"b64": "not base64!"}]}, "instances[0].b64"),
    ({"instances": ["raw string"]}, "instances[0]: not a serialized tf.Example"),
    ({"instances": [{"b64": "aGVsbG8gd29ybGQ="}]}, "instances[0]: not a serialized tf.Example"),
    ({"inputs": {"fare": [1.0, 2.0], "trip_miles": [1.0]}}, "differ in length"),
    ({"inputs": {"fare": 1.0}}, "inputs.fare"),
    ({"instances": [{}], "inputs": {}}, "only one of 'inputs' or 'instances'"),
    ({"instances": [{}], "extra": 1}, "extra"),
    ({"examples": [{}]}, "unknown request field(s) ['examples']"),
    ({}, "Missing 'inputs' or 'instances' key"),
    ({"instances": [{"fare": 1e300}]}, "instances[0].fare: 1e+300 is not a finite float32"),
    ({"instances": [{"company": "\ud800"}]}, "instances[0].company: string is not valid Unicode"),
    ({"instances": [{"trip_seconds": 10**30}]}, "instances[0].trip_seconds"),
]


@pytest.mark.parametrize(("body", "named"), BAD_REQUESTS, ids=[n for _, n in BAD_REQUESTS])
def test_bad_requests_get_a_400_naming_the_field(client, body, named):
    status, answer = client.post(PREDICT, body)
    assert status == 400, answer
    assert named in answer["error"]
    assert client.post(PREDICT, {"instances": [{"fare": 10.0}]})[0] == 200


def _example(**features: tf.train.Feature) -> dict[str, str]:
    return b64(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())


@pytest.mark.parametrize(
    ("instance", "named"),
    [
        (_example(fare=tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"ten"]))), "bytes"),
        (_example(fare=tf.train.Feature(float_list=tf.train.FloatList(value=[1, 2]))), "2 values"),
        (_example(fare=tf.train.Feature(float_list=tf.train.FloatList(value=[math.nan]))), "nan"),
        ({"b64": base64.b64encode(b"\x0a\x05\x0a\x03\xff\xff\xff").decode()}, "not a serialized"),
    ],
    ids=["wrong kind", "two values", "nan", "truncated proto"],
)
def test_malformed_b64_examples_are_a_400(client, instance, named):
    status, answer = client.post(PREDICT, {"instances": [{"b64": b64(b"")["b64"]}, instance]})
    assert status == 400 and "instances[1]" in answer["error"] and named in answer["error"], answer


NOT_JSON = [b"", b"{not json", b"[1, 2]", b"\xff\xfe", b"[" * 5000, b'{"instances": [{}]} more']


@pytest.mark.parametrize("body", NOT_JSON)
def test_non_json_bodies_are_a_400(client, body):
    status, answer = client.post(PREDICT, body)
    assert status == 400 and "JSON" in answer["error"], answer


def test_oversized_body_is_a_413_and_the_server_keeps_serving(client):
    body = json.dumps({"instances": [{"fare": 1.0, "company": "x" * 100}] * 3000}).encode()
    assert len(body) > MAX_BODY
    status, answer = client.post(PREDICT, body)
    assert status == 413 and "limit" in answer["error"]
    assert client.post(PREDICT, {"instances": [{"fare": 10.0}]})[0] == 200


def test_unknown_routes_are_tf_serving_errors(client):
    assert client.post(f"/v1/models/{MODEL}", {"instances": [{}]}) == (
        400,
        {"error": f"Malformed request: POST /v1/models/{MODEL}"},
    )
    assert client.call("DELETE", f"/v1/models/{MODEL}")[0] == 400
    assert client.get("/v1/nothing") == (400, {"error": "Malformed request: GET /v1/nothing"})
    assert client.get("/metrics")[0] == 404


# ---- request log -----------------------------------------------------------------------------


def logged_examples(directory: Path) -> list[tf.train.Example]:
    examples = []
    for path in sorted(directory.glob("requests-*.tfrecord")):
        for record in tf.data.TFRecordDataset(str(path)):
            examples.append(tf.train.Example.FromString(record.numpy()))
    return examples


def test_logged_requests_hold_what_was_sent(client, server_dirs, taxi):
    """Values as sent, a missing value as an absent feature, serving_raw markers included."""
    marker = 4321.5
    row = {"fare": marker, "company": None, "trip_miles": [], "payment_type": "Cash"}
    assert client.post(PREDICT, {"instances": [row]})[0] == 200
    raw = raw_instances(taxi, [{"fare": marker + 1, "company": "Sun Taxi"}])
    assert client.post(PREDICT, {"signature_name": RAW_SIGNATURE, "instances": raw})[0] == 200

    def find(fare: float) -> tf.train.Example | None:
        for example in logged_examples(server_dirs["log"]):
            if list(example.features.feature["fare"].float_list.value) == [fare]:
                return example
        return None

    json_row = wait_for(lambda: find(marker), what="the JSON request in the request log")
    assert set(json_row.features.feature) == {"fare", "payment_type"}
    assert json_row.features.feature["payment_type"].bytes_list.value == [b"Cash"]
    raw_row = wait_for(lambda: find(marker + 1), what="the serving_raw request in the log")
    assert set(raw_row.features.feature) == {"fare", "company"}


# ---- hot pickup ------------------------------------------------------------------------------


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


def test_pushed_version_is_picked_up_without_restart(trained_export, tmp_path, eval_rows):
    trained, exported = trained_export
    auc = trained.metrics["eval"]["auc"]
    base = tmp_path / "base"
    assert push(exported.export_dir, base, auc, AUC_RULE).version == 1
    examples, _, _ = eval_rows
    body = {"instances": [b64(e) for e in examples[:4]]}
    with running_server(base, tmp_path) as client:
        assert served_versions(client) == {"1"}
        with steady_traffic(client, body) as statuses:  # requests keep working during the swap
            assert push(exported.export_dir, base, auc, AUC_RULE, version=2).blessed
            wait_for(lambda: served_versions(client) == {"1", "2"}, what="version 2")
        assert statuses and set(statuses) == {200}
        assert client.get(f"/v1/models/{MODEL}/metadata")[1]["model_spec"]["version"] == "2"
        first = client.post(f"/v1/models/{MODEL}/versions/1:predict", body)
        assert first[0] == 200 and client.post(PREDICT, body) == first

        # A third version evicts the oldest: at most two stay loaded.
        assert push(exported.export_dir, base, auc, AUC_RULE, version=3).blessed
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


# ---- encoding, without a server --------------------------------------------------------------


def _proto_example(row: dict[str, Any], types: dict[str, str], empty_for_missing: bool) -> bytes:
    """``row`` as protobuf builds it: missing values absent, or as empty value lists (the way
    this server logged them before)."""
    example = tf.train.Example()
    example.features.SetInParent()
    lists = {"INT64": "int64_list", "FLOAT64": "float_list", "STRING": "bytes_list"}
    for name, kind in types.items():
        value = row.get(name)
        if value is None and not empty_for_missing:
            continue
        value_list = getattr(example.features.feature[name], lists[kind])
        value_list.SetInParent()
        if value is not None:
            value_list.value.append(value.encode() if isinstance(value, str) else value)
    return example.SerializeToString(deterministic=True)


def test_json_rows_serialize_exactly_as_protobuf_does(eval_rows, taxi):
    _, rows, _ = eval_rows
    encoder = ExampleEncoder(taxi)
    extremes = [
        {"trip_seconds": -1, "pickup_census_tract": 2**63 - 1, "company": "Škoda ☂ 出租"},
        {"trip_start_timestamp": -(2**63), "fare": 3.4e38, "payment_type": ""},
        {},
    ]
    encoded = encoder.encode_rows([*rows, *extremes], "instances")
    reference = [_proto_example(r, encoder.types, False) for r in [*rows, *extremes]]
    assert encoded == reference
    # One-row requests take a shortcut: the same bytes, and the same errors.
    assert [encoder.encode_rows([r], "instances")[0] for r in [*rows, *extremes]] == encoded
    for bad in (
        {"fare": 1e300},
        {"fare": math.nan},
        {"company": "\ud800"},
        {"trip_seconds": 2**63},
    ):
        with pytest.raises(BadRequest) as alone:
            encoder.encode_rows([bad], "instances")
        with pytest.raises(BadRequest) as batched:
            encoder.encode_rows([bad, {}], "instances")
        assert str(alone.value) == str(batched.value)


def test_absent_and_empty_features_give_the_same_predictions(trained_export, eval_rows, taxi):
    """The request log now records missing values as absent features: the transform graph and
    the model see exactly what they saw when they were empty lists."""
    _, exported = trained_export
    _, rows, _ = eval_rows
    types = ExampleEncoder(taxi).types
    absent = [_proto_example(r, types, False) for r in rows]
    empty = [_proto_example(r, types, True) for r in rows]
    assert absent != empty
    loaded = tf.saved_model.load(str(exported.export_dir))
    for name in (SERVING_SIGNATURE, TRANSFORM_SIGNATURE):
        by_absent = loaded.signatures[name](**{EXAMPLES_INPUT: tf.constant(absent)})
        by_empty = loaded.signatures[name](**{EXAMPLES_INPUT: tf.constant(empty)})
        for output in by_absent:
            np.testing.assert_array_equal(by_absent[output].numpy(), by_empty[output].numpy())


def test_fast_signature_call_equals_tensorflows_own(trained_export, eval_rows, taxi):
    """The server's flat call on the single-threaded executor gives exactly what TensorFlow's
    keyword call on its default executor gives."""
    _, exported = trained_export
    examples, _, records = eval_rows
    model = load_version(Path(exported.export_dir), 1)
    from pipeline.export import raw_inputs

    feeds = {
        SERVING_SIGNATURE: {EXAMPLES_INPUT: examples},
        CLASSIFICATION_SIGNATURE: {"inputs": examples},
        RAW_SIGNATURE: raw_inputs(taxi, records),
    }
    for name, feed in feeds.items():
        signature = model.signatures[name]
        assert signature._flat is not None, name
        assert signature.executor == SINGLE_THREADED_EXECUTOR, name
        fast = signature.run(feed)
        tensors = {k: tf.constant(v) for k, v in feed.items()}
        slow = {k: v.numpy() for k, v in signature.function(**tensors).items()}
        assert fast.keys() == slow.keys()
        for output in fast:
            np.testing.assert_array_equal(fast[output], slow[output])


@pytest.mark.parametrize(
    ("batch", "named"),
    [
        ([b"\x0a\xff\xff\xff\x0f garbage"], "examples[0]: could not parse example input"),
        ([b"", b"\xff\xfe\x80 not a proto"], "examples[1]: could not parse example input"),
    ],
)
def test_bytes_tensorflow_cannot_even_quote_are_a_400_naming_the_example(
    trained_export, batch, named
):
    """TensorFlow's error for such bytes quotes them and fails to decode itself as UTF-8
    (``UnicodeDecodeError``, not the op's error): still the client's mistake, named."""
    _, exported = trained_export
    signature = load_version(Path(exported.export_dir), 1).signatures[SERVING_SIGNATURE]
    with pytest.raises(BadRequest, match=re.escape(named)):
        signature.run({EXAMPLES_INPUT: batch})


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
