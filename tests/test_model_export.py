"""Model wiring, the self-contained export, prediction in a fresh process, and the parity proof."""

from __future__ import annotations

import json
import math
import shutil
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras
from tensorflow.core.protobuf import fingerprint_pb2
from tensorflow.python.saved_model import loader_impl
from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting as fingerprinting_pywrap

from pipeline.definition import ModelPart
from pipeline.export import (
    API_INPUT,
    CLASSIFICATION_SIGNATURE,
    CLASSIFY_METHOD,
    EXAMPLES_INPUT,
    MISSING_VALUES,
    RAW_SIGNATURE,
    SERVING_SIGNATURE,
    load_export,
    raw_inputs,
    raw_instances,
)
from pipeline.model import WIDE_ONLY, ModelConfig, build_model, model_inputs
from pipeline.parity import check_parity, serving_examples
from pipeline.raw_schema import tf_dtype
from pipeline.train import load_trained_model
from tests.conftest import PYTHON, subprocess_env

pytestmark = pytest.mark.slow


def _layer_names(model) -> set[str]:
    return {layer.name for layer in model.layers}


def _feeds_wide(name: str, layers: set[str]) -> bool:
    return any(f"{prefix}_{name}" in layers for prefix in ("onehot", "multihot", "linear"))


def _feeds_deep(name: str, layers: set[str]) -> bool:
    return f"embed_{name}" in layers or f"dense_{name}" in layers


def test_every_feature_reaches_the_part_it_is_meant_for(trained_export, taxi):
    trained, _ = trained_export
    layers = _layer_names(load_trained_model(trained.model_dir))
    for feature in taxi.features:
        name = feature.output_name
        assert _feeds_wide(name, layers) == (feature.model_part in (ModelPart.WIDE, ModelPart.BOTH))
        assert _feeds_deep(name, layers) == (feature.model_part in (ModelPart.DEEP, ModelPart.BOTH))


def test_model_beats_both_baselines_on_eval_and_test(trained_export):
    metrics = trained_export[0].metrics
    for split in ("eval", "test"):
        majority, wide = metrics[f"majority_baseline_{split}"], metrics[f"wide_baseline_{split}"]
        assert majority["auc"] == 0.5
        assert metrics[split]["auc"] > 0.7
        assert metrics[split]["auc"] > majority["auc"] + 0.2, split
        assert metrics[split]["log_loss"] < majority["log_loss"], split
        assert wide["auc"] > majority["auc"], split
    assert metrics["train_labels"]["examples"] == 3000


def test_every_metric_is_reported_for_the_model_and_both_baselines(trained_export, small_splits):
    metrics = trained_export[0].metrics
    names = ("auc", "accuracy", "precision", "recall", "log_loss")
    for split in ("eval", "test"):
        for key in (split, f"majority_baseline_{split}", f"wide_baseline_{split}"):
            assert set(names) <= set(metrics[key]), key
            for name in names:
                value = metrics[key][name]
                assert math.isfinite(value), (key, name)
                if name == "log_loss":
                    assert value > 0, key
                else:
                    assert 0.0 <= value <= 1.0, (key, name, value)
    train_rate = metrics["train_labels"]["class_shares"][1]
    assert train_rate < 0.5  # so the majority always predicts 0 ...
    eval_labels = np.asarray(pq.read_table(small_splits["eval"])["big_tipper"])
    # ... and is right exactly as often as eval's negatives occur.
    assert metrics["majority_baseline_eval"]["accuracy"] == pytest.approx(1 - eval_labels.mean())


def test_hidden_layers_and_parts_are_configurable(transform_output, taxi):
    inputs = model_inputs(taxi, tft.TFTransformOutput(str(transform_output.output_dir)))

    def hidden(model) -> list[tuple[str, int]]:
        return [(la.name, la.units) for la in model.layers if la.name.startswith("deep_hidden_")]

    three = build_model(inputs, taxi.label.head, ModelConfig(hidden_units=(16, 8, 4), dropout=0.0))
    assert hidden(three) == [("deep_hidden_0", 16), ("deep_hidden_1", 8), ("deep_hidden_2", 4)]
    assert not any(la.name.startswith("deep_dropout_") for la in three.layers)
    one = build_model(inputs, taxi.label.head, ModelConfig(hidden_units=(5,), max_embedding_dim=3))
    assert hidden(one) == [("deep_hidden_0", 5)]
    assert "deep_dropout_0" in _layer_names(one)
    embeddings = [la for la in one.layers if isinstance(la, tf_keras.layers.Embedding)]
    assert embeddings and max(la.output_dim for la in embeddings) == 3

    wide = build_model(inputs, taxi.label.head, ModelConfig(), parts=WIDE_ONLY)
    layers = _layer_names(wide)
    assert not any(_feeds_deep(i.name, layers) for i in inputs)
    assert "deep_logit" not in layers and "wide_logit" in layers
    for i in inputs:
        assert _feeds_wide(i.name, layers) == i.feeds(ModelPart.WIDE), i.name
    # The baseline's linear part is the full model's, layer for layer.
    full = _layer_names(three)
    assert {n for n in layers if _is_wide_layer(n)} == {n for n in full if _is_wide_layer(n)}


def _is_wide_layer(name: str) -> bool:
    return name.startswith(("onehot_", "multihot_", "linear_", "wide_"))


def test_export_serves_raw_examples_without_the_label(trained_export, small_splits, taxi):
    from pipeline.parity import read_raw_rows

    _, exported = trained_export
    raw = read_raw_rows(taxi, small_splits["eval"], 8)
    loaded = tf.saved_model.load(str(exported.export_dir))
    out = loaded.signatures[SERVING_SIGNATURE](
        **{EXAMPLES_INPUT: tf.constant(serving_examples(taxi, raw))}
    )
    probabilities = out["probabilities"].numpy()
    assert probabilities.shape == (8,)
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    np.testing.assert_array_equal(out["classes"].numpy(), (probabilities >= 0.5).astype(np.int64))
    assert "tips" not in {c.name for c in taxi.serving_columns}


def test_predict_in_a_fresh_process_from_a_moved_export(trained_export, small_splits, tmp_path):
    _, exported = trained_export
    moved = tmp_path / "elsewhere" / "1"
    shutil.copytree(exported.export_dir, moved)
    completed = subprocess.run(
        [
            PYTHON,
            "-m",
            "pipeline.predict",
            "--export-dir",
            str(moved),
            "--split-dir",
            str(small_splits["eval"]),
            "--rows",
            "3",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=subprocess_env(),
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    predictions = json.loads(completed.stdout.strip().splitlines()[-1])["predictions"]
    assert len(predictions) == 3
    assert all(0.0 <= p["probability"] <= 1.0 and "tips" not in p["request"] for p in predictions)
    assert {p["label"] for p in predictions} == {"big_tipper"}
    assert all(p["class"] == ("1" if p["probability"] >= 0.5 else "0") for p in predictions)


def test_parity_holds_for_every_feature_and_the_prediction(
    trained_export, transform_output, small_splits, taxi
):
    trained, exported = trained_export
    report = check_parity(
        taxi,
        transform_output.output_dir,
        exported.export_dir,
        small_splits["eval"],
        rows=150,
        model_dir=trained.model_dir,
    )
    assert report.passed, report.mismatches
    assert report.features_compared == [f.output_name for f in taxi.features]
    assert report.max_prediction_deviation is not None
    assert report.max_prediction_deviation <= 1e-5


def test_parity_fails_when_serving_has_other_statistics(
    trained_export, transform_output, small_splits, taxi, tmp_path
):
    """An export whose transform graph was analyzed on other data must be caught."""
    from pipeline.export import export_serving_model
    from pipeline.transform import run_transform

    trained, _ = trained_export
    skewed = run_transform(
        taxi, {"train": small_splits["eval"]}, tmp_path / "skewed", ["--runner", "DirectRunner"]
    )
    bad_export = export_serving_model(
        taxi, trained.model_dir, skewed.output_dir, tmp_path / "serving", version=7
    )
    report = check_parity(
        taxi, transform_output.output_dir, bad_export.export_dir, small_splits["eval"], rows=50
    )
    assert not report.passed
    assert any(m.startswith("fare_xf: row") for m in report.mismatches)
    assert report.max_deviation["fare_xf"] > 1e-3


def _serve_both(exported, taxi, rows: int, split_dir):
    from pipeline.predict import raw_examples

    examples, records = raw_examples(taxi, split_dir, rows)
    loaded = tf.saved_model.load(str(exported.export_dir))
    by_example = loaded.signatures[SERVING_SIGNATURE](**{EXAMPLES_INPUT: tf.constant(examples)})
    return loaded, records, by_example


def test_serving_raw_gives_the_same_predictions_as_serving_default(
    trained_export, small_splits, taxi
):
    _, exported = trained_export
    loaded, records, by_example = _serve_both(exported, taxi, 200, small_splits["eval"])
    raw = loaded.signatures[RAW_SIGNATURE]
    specs = raw.structured_input_signature[1]
    assert {name: spec.dtype for name, spec in specs.items()} == {
        c.name: tf_dtype(c.type) for c in taxi.serving_columns
    }
    assert all(spec.shape.as_list() == [None] for spec in specs.values())

    inputs = raw_inputs(taxi, records)
    for column in taxi.serving_columns:  # the rows do exercise every kind of missing marker
        marker = MISSING_VALUES[column.type.split_file_type]
        values = inputs[column.name]
        if isinstance(marker, float):
            missing = np.isnan(values)
        else:
            missing = values == (marker.encode() if isinstance(marker, str) else marker)
        assert missing.sum() == sum(not r[column.name] for r in records), column.name
    assert any(not r["company"] for r in records) and any(not r["pickup_latitude"] for r in records)

    by_tensors = raw(**{name: tf.constant(values) for name, values in inputs.items()})
    np.testing.assert_array_equal(
        by_tensors["probabilities"].numpy(), by_example["probabilities"].numpy()
    )
    np.testing.assert_array_equal(by_tensors["classes"].numpy(), by_example["classes"].numpy())


def test_serving_raw_takes_a_tf_serving_json_request(trained_export, small_splits, taxi):
    """The REST row format: every column in every instance, NaN / -(2**53-1) / "" for missing."""
    _, exported = trained_export
    loaded, records, by_example = _serve_both(exported, taxi, 20, small_splits["eval"])
    body = json.dumps({"signature_name": RAW_SIGNATURE, "instances": raw_instances(taxi, records)})
    assert "NaN" in body and str(MISSING_VALUES["INT64"]) in body
    instances = json.loads(body)["instances"]
    raw = loaded.signatures[RAW_SIGNATURE]
    tensors = {
        name: tf.constant([instance[name] for instance in instances], dtype=spec.dtype)
        for name, spec in raw.structured_input_signature[1].items()
    }
    np.testing.assert_array_equal(
        raw(**tensors)["probabilities"].numpy(), by_example["probabilities"].numpy()
    )
    # A row with every value missing is imputed, not rejected.
    empty = raw(**{k: tf.constant(v) for k, v in raw_inputs(taxi, [{}]).items()})
    assert 0.0 <= float(empty["probabilities"][0]) <= 1.0


def test_classification_signature_is_tf_servings_classify_shape(trained_export, small_splits, taxi):
    """``classes`` ``[batch, 2]`` labels and ``scores`` ``[1 - p, p]`` of ``serving_default``,
    under the classify method name, with a fingerprint that still matches the rewritten proto."""
    from pipeline.predict import raw_examples

    _, exported = trained_export
    loaded, _, by_example = _serve_both(exported, taxi, 50, small_splits["eval"])
    examples, _ = raw_examples(taxi, small_splits["eval"], 50)
    out = loaded.signatures[CLASSIFICATION_SIGNATURE](**{API_INPUT: tf.constant(examples)})
    assert out["classes"].numpy().tolist() == [[b"0", b"1"]] * 50
    positive = by_example["probabilities"].numpy()
    np.testing.assert_array_equal(out["scores"].numpy()[:, 1], positive)
    np.testing.assert_allclose(out["scores"].numpy()[:, 0], 1.0 - positive, rtol=1e-6)

    proto = loader_impl.parse_saved_model(str(exported.export_dir))
    methods = {k: v.method_name for k, v in proto.meta_graphs[0].signature_def.items()}
    assert methods[CLASSIFICATION_SIGNATURE] == CLASSIFY_METHOD
    assert methods[SERVING_SIGNATURE] == methods[RAW_SIGNATURE] == "tensorflow/serving/predict"
    recorded = tf.saved_model.experimental.read_fingerprint(str(exported.export_dir))
    fresh = fingerprinting_pywrap.CreateFingerprintDef(str(exported.export_dir))
    assert recorded.saved_model_checksum == (
        fingerprint_pb2.FingerprintDef.FromString(fresh).saved_model_checksum
    )


def _save_constant_model(path, value: float) -> None:
    module = tf.Module()
    module.value = tf.Variable(value)
    module.read = tf.function(lambda: module.value + 0.0, input_signature=[])
    tf.saved_model.save(module, str(path))


def test_an_export_is_loaded_once_per_process_until_its_bytes_change(tmp_path):
    export_dir = tmp_path / "model" / "1"
    _save_constant_model(export_dir, 1.0)
    first = load_export(export_dir)
    assert load_export(export_dir) is first and float(first.read()) == 1.0
    shutil.rmtree(export_dir)  # the same directory, other contents: another fingerprint
    _save_constant_model(export_dir, 2.0)
    second = load_export(export_dir)
    assert second is not first and float(second.read()) == 2.0
    (export_dir / "fingerprint.pb").unlink()  # nothing to tell the contents by: load afresh
    assert load_export(export_dir) is not load_export(export_dir)
