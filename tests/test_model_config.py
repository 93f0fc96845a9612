"""Model wiring over any definition, heads per label kind, metrics and baselines (no Beam)."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest

from pipeline import metrics
from pipeline.definition import (
    BinaryLabel,
    Feature,
    LabelKind,
    ModelPart,
    MultiClassLabel,
    RegressionLabel,
)
from pipeline.model import (
    WIDE_ONLY,
    ModelConfig,
    ModelInput,
    build_model,
    embedding_dim,
    initial_output_bias,
)
from pipeline.train import StepBudget, add_train_arguments, config_from_args
from transforms import kinds

BINARY = BinaryLabel("late", "delay", ">", 15).head
MULTICLASS = MultiClassLabel("lateness", "delay", ("a", "b", "c"), boundaries=(15, 60)).head
REGRESSION = RegressionLabel("delay_minutes", "delay").head


def _inputs() -> list[ModelInput]:
    """Feature kinds beyond the taxi definition: dense vectors of width k, multi-hot, k ids."""
    return [
        ModelInput(Feature("pca", "a", kinds.ZScore(), ModelPart.DEEP), width=5),
        ModelInput(Feature("tags", "b", kinds.Scale01(), ModelPart.BOTH), width=7),
        ModelInput(Feature("amount", "c", kinds.ZScore(), ModelPart.DEEP)),
        ModelInput(Feature("city", "d", kinds.Vocabulary(), ModelPart.BOTH), num_categories=30),
        ModelInput(
            Feature("last_ids", "e", kinds.Identity(num_buckets=12), ModelPart.BOTH),
            num_categories=12,
            width=3,
        ),
        ModelInput(
            Feature("cross", ("d", "e"), kinds.Cross(hash_buckets=64), ModelPart.WIDE),
            num_categories=64,
        ),
    ]


def _batch(inputs: list[ModelInput], rows: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    batch = {}
    for i in inputs:
        shape = (rows,) if i.width == 1 else (rows, i.width)
        if i.is_categorical:
            batch[i.name] = rng.integers(0, i.num_categories, shape)
        else:
            batch[i.name] = rng.random(shape, dtype=np.float32)
    return batch


def test_every_feature_of_any_width_reaches_its_part():
    inputs = _inputs()
    model = build_model(inputs, BINARY, ModelConfig(hidden_units=(8,)))
    layers = {layer.name for layer in model.layers}
    wide = {"linear_tags_xf", "onehot_city_xf", "multihot_last_ids_xf", "onehot_cross_xf"}
    deep = {
        "dense_pca_xf",
        "dense_tags_xf",
        "dense_amount_xf",
        "embed_city_xf",
        "embed_last_ids_xf",
    }
    assert {n for n in layers if n.startswith(("linear_", "onehot_", "multihot_"))} == wide
    assert {n for n in layers if n.startswith(("dense_", "embed_")) and "_mean_" not in n} == deep
    embedded = embedding_dim(30, 16) + embedding_dim(12, 16)  # k ids are averaged into one
    assert model.get_layer("deep_features").output.shape[-1] == 5 + 7 + 1 + embedded
    assert model.get_layer("wide_features").output.shape[-1] == 7 + 30 + 12 + 64
    probabilities = model(_batch(inputs), training=False).numpy()
    assert probabilities.shape == (4,)
    assert np.all((probabilities > 0) & (probabilities < 1))


def test_wide_only_model_is_the_linear_part_over_the_same_inputs():
    inputs = _inputs()
    wide = build_model(inputs, BINARY, ModelConfig(), parts=WIDE_ONLY)
    assert wide.name == "wide_only"
    assert sorted(wide.input) == sorted(i.name for i in inputs)  # fed by the same batches
    names = {layer.name for layer in wide.layers}
    assert "wide_logit" in names and "deep_logit" not in names
    assert not any(name.startswith(("deep_", "embed_", "dense_")) for name in names)
    assert wide.get_layer("wide_logit").kernel.shape == (7 + 30 + 12 + 64, 1)
    values = wide.test_on_batch(_batch(inputs), np.array([0, 1, 1, 0]), return_dict=True)
    assert {"loss", "auc", "accuracy"} <= set(values)


@pytest.mark.parametrize(
    ("head", "labels", "shape", "loss"),
    [
        (MULTICLASS, np.array([0, 1, 2, 1]), (4, 3), "sparse_categorical_crossentropy"),
        (REGRESSION, np.array([-3.0, 12.0, 40.0, 7.0]), (4,), "mean_squared_error"),
    ],
)
def test_heads_follow_the_label_kind(head, labels, shape, loss):
    inputs = _inputs()
    model = build_model(inputs, head, ModelConfig(hidden_units=(8,)))
    output = model(_batch(inputs), training=False).numpy()
    assert output.shape == shape and model.loss == loss
    if head.kind is LabelKind.MULTICLASS:
        np.testing.assert_allclose(output.sum(axis=1), 1.0, rtol=1e-5)
    model.train_on_batch(_batch(inputs), labels)  # the loss accepts the label's dtype and shape


def test_the_output_bias_starts_at_the_training_base_rate():
    inputs = _inputs()
    zero = {name: np.zeros_like(v) for name, v in _batch(inputs).items()}
    binary_bias = initial_output_bias(BINARY, {"class_shares": [0.8, 0.2]})
    model = build_model(inputs, BINARY, ModelConfig(hidden_units=()), output_bias=binary_bias)
    for layer in model.layers:  # every other weight at zero: the bias alone decides
        if layer.name != "output_bias":
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    np.testing.assert_allclose(model(zero).numpy(), 0.2, rtol=1e-5)
    mean_bias = initial_output_bias(REGRESSION, {"mean": 7.5})
    regression = build_model(
        inputs, REGRESSION, ModelConfig(hidden_units=()), output_bias=mean_bias
    )
    for layer in regression.layers:
        if layer.name != "output_bias":
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    np.testing.assert_allclose(regression(zero).numpy(), 7.5, rtol=1e-6)


def test_the_step_budget_stops_inside_an_epoch():
    inputs = _inputs()
    model = build_model(inputs, BINARY, ModelConfig(hidden_units=(4,)))
    batch = _batch(inputs)
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensors((batch, np.array([0, 1, 1, 0]))).repeat()
    budget = StepBudget(7)
    model.fit(dataset, epochs=2, steps_per_epoch=5, callbacks=[budget], verbose=0)
    assert budget.done == 7  # 5 + 2, not 2 * 5 and not 5 (epochs = steps // steps_per_epoch)


def test_training_flags_reach_the_configs():
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    flags = "--hidden-units 128,64,32 --max-embedding-dim 8 --learning-rate 0.01 --batch-size 512"
    flags += " --dropout 0.25 --train-steps 300 --steps-per-epoch 100 --no-wide-baseline"
    args = parser.parse_args(flags.split(" "))
    config = config_from_args(args)
    assert config.batch_size == 512 and config.train_steps == 300 and not config.wide_baseline
    assert config.model == ModelConfig(
        hidden_units=(128, 64, 32), max_embedding_dim=8, learning_rate=0.01, dropout=0.25
    )
    assert config_from_args(parser.parse_args(["--hidden-units", ""])).model.hidden_units == ()
    with pytest.raises(SystemExit):
        parser.parse_args(["--hidden-units", "64,x"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--train-steps", "0"])


def test_majority_baseline_predicts_the_training_base_rate():
    summary = metrics.label_summary(LabelKind.BINARY, np.array([1, 0, 0, 0]), 2)
    assert summary["class_shares"] == [0.75, 0.25]
    labels = np.array([0] * 8 + [1] * 2)
    predicted = metrics.baseline_predictions(LabelKind.BINARY, summary, len(labels))
    scores = metrics.evaluate(LabelKind.BINARY, labels, predicted)
    assert scores["auc"] == 0.5 and scores["accuracy"] == pytest.approx(0.8)
    assert scores["precision"] == 0.0 and scores["recall"] == 0.0
    expected = -(0.2 * math.log(0.25) + 0.8 * math.log(0.75))
    assert scores["log_loss"] == pytest.approx(expected, abs=1e-6)


def test_multiclass_and_regression_metrics_equal_the_reference_formulas():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 200)
    probabilities = rng.dirichlet([1, 1, 1], 200)
    scores = metrics.evaluate(LabelKind.MULTICLASS, labels, probabilities)
    predicted = probabilities.argmax(axis=1)
    assert scores["accuracy"] == pytest.approx((predicted == labels).mean(), abs=1e-6)
    per_class = []
    for c in range(3):
        tp = np.sum((predicted == c) & (labels == c))
        precision = tp / max(np.sum(predicted == c), 1)
        recall = tp / max(np.sum(labels == c), 1)
        per_class.append(0 if tp == 0 else 2 * precision * recall / (precision + recall))
    assert scores["macro_f1"] == pytest.approx(np.mean(per_class), abs=1e-6)
    targets, guesses = rng.normal(10, 30, 300), rng.normal(10, 30, 300)
    regression = metrics.evaluate(LabelKind.REGRESSION, targets, guesses)
    assert regression["rmse"] == pytest.approx(np.sqrt(np.mean((targets - guesses) ** 2)), 1e-6)
    assert regression["mae"] == pytest.approx(np.mean(np.abs(targets - guesses)), 1e-6)
    mean = metrics.baseline_predictions(LabelKind.REGRESSION, {"mean": targets.mean()}, 300)
    assert metrics.evaluate(LabelKind.REGRESSION, targets, mean)["r2"] == pytest.approx(0, abs=1e-9)
    binary = rng.integers(0, 2, 100)
    scores_b = rng.random(100)
    positives, negatives = scores_b[binary == 1], scores_b[binary == 0]
    pairs = (positives[:, None] > negatives[None, :]).mean()  # P(positive ranked above negative)
    assert metrics.evaluate(LabelKind.BINARY, binary, scores_b)["auc"] == pytest.approx(pairs, 1e-6)


def test_autograph_leaves_keras_training_code_alone():
    """tf_keras's fit/evaluate/predict code is traced as Python, not rewritten by AutoGraph (the
    rewrite cost about half of the training stage), while the project's own layers still are."""
    import tf_keras
    from tensorflow.python.autograph.impl import conversion

    from pipeline import model

    assert conversion.is_allowlisted(tf_keras.Model.train_step)
    assert conversion.is_allowlisted(tf_keras.layers.Dense.call)
    assert not conversion.is_allowlisted(model._OutputBias.call)
    model.leave_tf_keras_to_python()  # idempotent: one rule however often modules load
    from tensorflow.python.autograph.core import config

    assert sum(str(r) == "DoNotConvert rule for tf_keras" for r in config.CONVERSION_RULES) == 1
