"""Model wiring, the self-contained export, prediction in a fresh process, and the parity proof."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from pipeline.dataset import ModelPart
from pipeline.export import EXAMPLES_INPUT, SERVING_SIGNATURE
from pipeline.parity import check_parity, serving_examples
from pipeline.train import load_trained_model
from tests.conftest import PYTHON, subprocess_env

pytestmark = pytest.mark.slow


def test_every_feature_reaches_the_part_it_is_meant_for(trained_export, taxi):
    trained, _ = trained_export
    model = load_trained_model(trained.model_dir)
    layers = {layer.name for layer in model.layers}
    for feature in taxi.features:
        name = feature.output_name
        wide = f"onehot_{name}" in layers
        deep = f"embed_{name}" in layers or f"dense_{name}" in layers
        assert wide == (feature.model_part in (ModelPart.WIDE, ModelPart.BOTH)), name
        assert deep == (feature.model_part in (ModelPart.DEEP, ModelPart.BOTH)), name


def test_training_beats_the_majority_baseline(trained_export):
    trained, _ = trained_export
    assert trained.metrics["eval"]["auc"] > 0.7
    assert trained.metrics["majority_baseline_eval"]["auc"] == 0.5


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
