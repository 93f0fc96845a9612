"""Model wiring over any dataset definition, training flags and the majority baseline (no Beam)."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest

from pipeline.dataset import Feature, ModelPart, Transform
from pipeline.model import (
    METRICS,
    WIDE_ONLY,
    ModelConfig,
    ModelInput,
    build_model,
    embedding_dim,
)
from pipeline.train import add_train_arguments, config_from_args, majority_baseline


def _inputs() -> list[ModelInput]:
    """Feature kinds beyond the taxi definition: dense vectors of width k, multi-hot, k ids."""
    return [
        ModelInput(Feature("pca", ("a",), Transform.ZSCORE, ModelPart.DEEP), width=5),
        ModelInput(Feature("tags", ("b",), Transform.SCALE_0_1, ModelPart.BOTH), width=7),
        ModelInput(Feature("amount", ("c",), Transform.ZSCORE, ModelPart.DEEP)),
        ModelInput(
            Feature("city", ("d",), Transform.VOCABULARY, ModelPart.BOTH), num_categories=30
        ),
        ModelInput(
            Feature("last_ids", ("e",), Transform.IDENTITY, ModelPart.BOTH),
            num_categories=12,
            width=3,
        ),
        ModelInput(
            Feature("cross", ("d", "e"), Transform.CROSS, ModelPart.WIDE), num_categories=64
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
    model = build_model(inputs, ModelConfig(hidden_units=(8,)))
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
    assert probabilities.shape == (4, 1)
    assert np.all((probabilities > 0) & (probabilities < 1))


def test_wide_only_model_is_the_linear_part_over_the_same_inputs():
    inputs = _inputs()
    wide = build_model(inputs, ModelConfig(), parts=WIDE_ONLY)
    assert wide.name == "wide_only"
    assert sorted(wide.input) == sorted(i.name for i in inputs)  # fed by the same batches
    names = {layer.name for layer in wide.layers}
    assert "wide_logit" in names and "deep_logit" not in names
    assert not any(name.startswith(("deep_", "embed_", "dense_")) for name in names)
    assert wide.get_layer("wide_logit").kernel.shape == (7 + 30 + 12 + 64, 1)
    batch = _batch(inputs)
    values = wide.test_on_batch(batch, np.array([0, 1, 1, 0]), return_dict=True)
    assert set(METRICS) <= set(values)


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


def test_majority_baseline_predicts_the_training_base_rate():
    negative = majority_baseline(0.25, 0.2)
    assert negative["auc"] == 0.5 and negative["accuracy"] == pytest.approx(0.8)
    assert negative["precision"] == 0.0 and negative["recall"] == 0.0
    expected = -(0.2 * math.log(0.25) + 0.8 * math.log(0.75))
    assert negative["log_loss"] == pytest.approx(expected, abs=1e-6)
    positive = majority_baseline(0.6, 0.7)
    assert positive["accuracy"] == pytest.approx(0.7) and positive["precision"] == 0.7
    assert positive["recall"] == 1.0
    assert math.isfinite(majority_baseline(0.0, 0.1)["log_loss"])
