"""Wide-and-deep Keras model whose inputs derive from the dataset definition.

The wide part is a linear model over one-hot categorical ids (vocabularies, buckets, hashed
crosses): it memorizes. The deep part embeds categorical ids and joins the dense features in a
small neural net: it generalizes. Their logits add up to one joint logit.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras

from pipeline.dataset import DatasetDefinition, Feature, ModelPart, Transform


@dataclasses.dataclass(frozen=True)
class ModelInput:
    """One model input: a categorical id with ``num_categories`` values, or a dense vector."""

    feature: Feature
    num_categories: int | None = None  # categorical inputs
    width: int = 1  # dense inputs: values per example

    @property
    def name(self) -> str:
        return self.feature.output_name

    @property
    def is_categorical(self) -> bool:
        return self.num_categories is not None


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    hidden_units: tuple[int, ...] = (64, 32)
    max_embedding_dim: int = 16
    learning_rate: float = 0.003
    dropout: float = 0.1


def model_inputs(dataset: DatasetDefinition, tft_output: tft.TFTransformOutput) -> list[ModelInput]:
    """Describe every model input from the definition and the transform's recorded domains."""
    spec = tft_output.transformed_feature_spec()
    inputs = []
    for feature in dataset.features:
        if feature.is_categorical:
            inputs.append(ModelInput(feature, num_categories=_num_categories(feature, tft_output)))
        else:
            shape = spec[feature.output_name].shape
            inputs.append(ModelInput(feature, width=int(shape[0]) if len(shape) else 1))
    return inputs


def _num_categories(feature: Feature, tft_output: tft.TFTransformOutput) -> int:
    if feature.transform is Transform.IDENTITY:
        return int(feature.params["num_buckets"])
    if feature.transform is Transform.CROSS:
        return int(feature.params["hash_buckets"])
    # Vocabularies and quantile buckets: TFT records the id range in the transformed schema.
    return int(tft_output.num_buckets_for_transformed_feature(feature.output_name))


def embedding_dim(num_categories: int, cap: int) -> int:
    """Rule of thumb: about 6 * n^(1/4), capped."""
    return max(2, min(cap, math.ceil(6 * num_categories**0.25)))


def build_model(inputs: list[ModelInput], config: ModelConfig = ModelConfig()) -> tf_keras.Model:
    """A compiled wide-and-deep binary classifier taking a dict of transformed features."""
    keras_inputs = {
        i.name: tf_keras.Input(
            shape=() if i.width == 1 else (i.width,),
            dtype=tf.int64 if i.is_categorical else tf.float32,
            name=i.name,
        )
        for i in inputs
    }
    wide = [
        tf_keras.layers.CategoryEncoding(i.num_categories, "one_hot", name=f"onehot_{i.name}")(
            keras_inputs[i.name]
        )
        for i in inputs
        if i.is_categorical and i.feature.model_part in (ModelPart.WIDE, ModelPart.BOTH)
    ]
    deep = []
    for i in inputs:
        if i.feature.model_part not in (ModelPart.DEEP, ModelPart.BOTH):
            continue
        if i.is_categorical:
            dim = embedding_dim(i.num_categories, config.max_embedding_dim)
            deep.append(
                tf_keras.layers.Embedding(i.num_categories, dim, name=f"embed_{i.name}")(
                    keras_inputs[i.name]
                )
            )
        else:
            deep.append(
                tf_keras.layers.Reshape((i.width,), name=f"dense_{i.name}")(keras_inputs[i.name])
            )
    logits = []
    if wide:
        wide_x = _concat(wide, "wide_features")
        logits.append(tf_keras.layers.Dense(1, name="wide_logit")(wide_x))
    if deep:
        x = _concat(deep, "deep_features")
        for layer, units in enumerate(config.hidden_units):
            x = tf_keras.layers.Dense(units, activation="relu", name=f"deep_hidden_{layer}")(x)
            if config.dropout:
                x = tf_keras.layers.Dropout(config.dropout, name=f"deep_dropout_{layer}")(x)
        logits.append(tf_keras.layers.Dense(1, name="deep_logit")(x))
    logit = logits[0] if len(logits) == 1 else tf_keras.layers.Add(name="logit")(logits)
    probability = tf_keras.layers.Activation("sigmoid", name="probability")(logit)
    model = tf_keras.Model(inputs=keras_inputs, outputs=probability, name="wide_and_deep")
    model.compile(
        optimizer=tf_keras.optimizers.Adam(config.learning_rate),
        loss="binary_crossentropy",
        metrics=[
            tf_keras.metrics.AUC(name="auc"),
            tf_keras.metrics.BinaryAccuracy(name="accuracy"),
        ],
    )
    return model


def _concat(tensors: list, name: str):
    return tensors[0] if len(tensors) == 1 else tf_keras.layers.Concatenate(name=name)(tensors)
