"""Wide-and-deep Keras model whose inputs derive from the dataset definition.

The wide part is a linear model over one-hot categorical ids (vocabularies, buckets, hashed
crosses) and any dense feature marked for it: it memorizes. The deep part embeds categorical ids
and joins the dense features (of any width) in a small neural net: it generalizes. Their logits
add up to one joint logit.

Nothing here names a feature: every input, its kind (categorical id or dense vector) and its
width come from the dataset definition and the transform's recorded output, and each feature
feeds the part(s) its ``model_part`` names. The head follows the label kind
(:class:`pipeline.definition.Head`): a sigmoid unit (binary), a softmax over the classes
(multi-class) or a linear unit (regression), with its loss. :func:`build_model` with
``parts=WIDE_ONLY`` builds the wide part alone from the same wiring (the linear baseline).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras

from pipeline.definition import DatasetDefinition, Feature, Head, LabelKind, ModelPart


def leave_tf_keras_to_python() -> None:
    """Tell AutoGraph not to convert ``tf_keras``'s own code, as it never converts ``keras``'s.

    AutoGraph rewrites the Python source of every function a ``tf.function`` calls unless a rule
    names its package; TensorFlow's rules skip ``tensorflow`` and ``keras`` but predate the
    ``tf_keras`` package (Keras 2, renamed), so each first trace of ``fit``, ``evaluate``,
    ``predict`` or a SavedModel save parsed and rewrote the whole of Keras's training code: about
    half of the training stage. Keras's code has no control flow on tensors for AutoGraph to
    rewrite (it ran unconverted under its old name), so the traced graphs compute the same.
    """
    from tensorflow.python.autograph.core import config

    rule = config.DoNotConvert("tf_keras")
    if not any(str(r) == str(rule) for r in config.CONVERSION_RULES):
        config.CONVERSION_RULES = (rule, *config.CONVERSION_RULES)


leave_tf_keras_to_python()

WIDE_AND_DEEP = frozenset({ModelPart.WIDE, ModelPart.DEEP})
WIDE_ONLY = frozenset({ModelPart.WIDE})
_LOSSES = {
    LabelKind.BINARY: "binary_crossentropy",
    LabelKind.MULTICLASS: "sparse_categorical_crossentropy",
    LabelKind.REGRESSION: "mean_squared_error",
}


@dataclasses.dataclass(frozen=True)
class ModelInput:
    """One model input: a categorical id with ``num_categories`` values, or a dense vector.

    ``width`` is the number of values per example: 1 for a scalar, k for a fixed-length vector
    (dense: e.g. PCA components or a multi-hot; categorical: k ids from the same domain).
    """

    feature: Feature
    num_categories: int | None = None  # categorical inputs
    width: int = 1

    @property
    def name(self) -> str:
        return self.feature.output_name

    @property
    def is_categorical(self) -> bool:
        return self.num_categories is not None

    def feeds(self, part: ModelPart) -> bool:
        return self.feature.model_part in (part, ModelPart.BOTH)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    hidden_units: tuple[int, ...] = (64, 32)
    max_embedding_dim: int = 16
    learning_rate: float = 0.003
    dropout: float = 0.1


def model_inputs(dataset: DatasetDefinition, tft_output: tft.TFTransformOutput) -> list[ModelInput]:
    """Describe every model input from the definition and the transform's recorded output."""
    spec = tft_output.transformed_feature_spec()
    inputs = []
    for feature in dataset.features:
        width = _width(feature, spec.get(feature.output_name))
        if feature.is_categorical:
            num_categories = _num_categories(feature, tft_output)
            inputs.append(ModelInput(feature, num_categories=num_categories, width=width))
        else:
            inputs.append(ModelInput(feature, width=width))
    return inputs


def _width(feature: Feature, spec) -> int:
    if spec is None:
        raise ValueError(
            f"feature {feature.name!r}: {feature.output_name!r} is not in the transform output "
            "(was it made with another dataset definition?)"
        )
    if not isinstance(spec, tf.io.FixedLenFeature) or len(spec.shape) > 1:
        raise ValueError(
            f"feature {feature.name!r}: the model takes a scalar or a fixed-length vector per "
            f"example, the transform output has {spec!r}"
        )
    return int(spec.shape[0]) if len(spec.shape) else 1


def _num_categories(feature: Feature, tft_output: tft.TFTransformOutput) -> int:
    """Size of a categorical feature's id range ``[0, n)``.

    The transform's recorded domain comes first (analyzers such as vocabularies and quantile
    buckets record it, as may any other categorical transform); otherwise the definition's
    ``num_buckets`` / ``hash_buckets`` param fixes it.
    """
    try:
        return int(tft_output.num_buckets_for_transformed_feature(feature.output_name))
    except ValueError:
        pass
    for param in ("num_buckets", "hash_buckets"):
        if param in feature.params:
            return int(feature.params[param])
    raise ValueError(
        f"feature {feature.name!r}: categorical, but neither the transform output records its "
        "id range nor do its params (num_buckets / hash_buckets) give it"
    )


def embedding_dim(num_categories: int, cap: int) -> int:
    """Rule of thumb: about 6 * n^(1/4), capped."""
    return max(2, min(cap, math.ceil(6 * num_categories**0.25)))


def build_model(
    inputs: list[ModelInput],
    head: Head,
    config: ModelConfig = ModelConfig(),
    parts: Iterable[ModelPart] = WIDE_AND_DEEP,
    output_bias: list[float] | None = None,
) -> tf_keras.Model:
    """A compiled model for ``head`` taking a dict of transformed features.

    ``parts`` chooses the wide part, the deep part or both (the default). The model takes every
    input either way, so the same batches feed a wide-and-deep model and its wide-only baseline.
    ``output_bias`` starts the joint logit where the training labels are (the log-odds of the
    positive rate, the log class shares, the mean target), so training does not spend its first
    steps learning the base rate.
    """
    parts = frozenset(parts)
    if not parts or not parts <= WIDE_AND_DEEP:
        raise ValueError(f"parts must be a non-empty subset of {sorted(WIDE_AND_DEEP)}")
    keras_inputs = {
        i.name: tf_keras.Input(
            shape=() if i.width == 1 else (i.width,),
            dtype=tf.int64 if i.is_categorical else tf.float32,
            name=i.name,
        )
        for i in inputs
    }
    logits, outputs = [], head.units
    if ModelPart.WIDE in parts:
        wide = [_wide_tensor(i, keras_inputs[i.name]) for i in inputs if i.feeds(ModelPart.WIDE)]
        if wide:
            logits.append(
                tf_keras.layers.Dense(outputs, name="wide_logit")(_concat(wide, "wide_features"))
            )
    if ModelPart.DEEP in parts:
        deep = [
            _deep_tensor(i, keras_inputs[i.name], config) for i in inputs if i.feeds(ModelPart.DEEP)
        ]
        if deep:
            x = _concat(deep, "deep_features")
            for layer, units in enumerate(config.hidden_units):
                x = tf_keras.layers.Dense(units, activation="relu", name=f"deep_hidden_{layer}")(x)
                if config.dropout:
                    x = tf_keras.layers.Dropout(config.dropout, name=f"deep_dropout_{layer}")(x)
            logits.append(tf_keras.layers.Dense(outputs, name="deep_logit")(x))
    if not logits:
        raise ValueError(f"no feature of the definition feeds {sorted(parts)}")
    logits.append(_OutputBias(outputs, output_bias, name="output_bias")(logits[0]))
    logit = tf_keras.layers.Add(name="logit")(logits)
    output = _output(head, logit)
    name = "wide_and_deep" if parts == WIDE_AND_DEEP else f"{next(iter(parts))}_only"
    model = tf_keras.Model(inputs=keras_inputs, outputs=output, name=name)
    model.compile(
        optimizer=tf_keras.optimizers.Adam(config.learning_rate),
        loss=_LOSSES[head.kind],
        metrics=compile_metrics(head),
    )
    return model


def _output(head: Head, logit):
    """Probabilities ``[batch]`` (binary), ``[batch, k]`` (multi-class), or targets ``[batch]``."""
    if head.kind is LabelKind.MULTICLASS:
        return tf_keras.layers.Activation("softmax", name="probabilities")(logit)
    flat = tf_keras.layers.Reshape((), name="flatten_logit")(logit)
    if head.kind is LabelKind.BINARY:
        return tf_keras.layers.Activation("sigmoid", name="probability")(flat)
    return tf_keras.layers.Activation("linear", name="prediction")(flat)


@tf_keras.saving.register_keras_serializable(package="pipeline")
class _OutputBias(tf_keras.layers.Layer):
    """A trainable bias added to the joint logit, started at the training labels' base rate."""

    def __init__(self, units: int, initial: list[float] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.initial = list(initial) if initial is not None else [0.0] * units

    def build(self, input_shape):
        self.bias = self.add_weight(
            name="bias",
            shape=(self.units,),
            initializer=tf_keras.initializers.Constant(self.initial),
        )

    def call(self, logit):
        return tf.zeros_like(logit) + self.bias

    def get_config(self):
        return {**super().get_config(), "units": self.units, "initial": self.initial}


def compile_metrics(head: Head) -> list[tf_keras.metrics.Metric]:
    """What Keras tracks while training (early stopping watches ``head.stopping_metric``); the
    reported metrics are computed afterwards by :mod:`pipeline.metrics`."""
    if head.kind is LabelKind.BINARY:
        return [tf_keras.metrics.AUC(name="auc"), tf_keras.metrics.BinaryAccuracy(name="accuracy")]
    if head.kind is LabelKind.MULTICLASS:
        return [tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    return [tf_keras.metrics.RootMeanSquaredError(name="rmse")]


def initial_output_bias(head: Head, summary: dict) -> list[float]:
    """The logit at which the model predicts the training labels' base rate."""
    if head.kind is LabelKind.REGRESSION:
        return [float(summary["mean"])]
    shares = [min(max(s, 1e-6), 1 - 1e-6) for s in summary["class_shares"]]
    if head.kind is LabelKind.BINARY:
        return [math.log(shares[1] / (1 - shares[1]))]
    return [math.log(s) for s in shares]


def _wide_tensor(i: ModelInput, x):
    """Linear-part input: one-hot (multi-hot for k ids) of a categorical id, or dense values."""
    if i.is_categorical:
        mode, prefix = ("one_hot", "onehot") if i.width == 1 else ("multi_hot", "multihot")
        return tf_keras.layers.CategoryEncoding(i.num_categories, mode, name=f"{prefix}_{i.name}")(
            x
        )
    return tf_keras.layers.Reshape((i.width,), name=f"linear_{i.name}")(x)


def _deep_tensor(i: ModelInput, x, config: ModelConfig):
    """Deep-part input: an embedding of a categorical id (averaged over k ids), or dense values."""
    if not i.is_categorical:
        return tf_keras.layers.Reshape((i.width,), name=f"dense_{i.name}")(x)
    dim = embedding_dim(i.num_categories, config.max_embedding_dim)
    embedded = tf_keras.layers.Embedding(i.num_categories, dim, name=f"embed_{i.name}")(x)
    if i.width == 1:
        return embedded
    return tf_keras.layers.GlobalAveragePooling1D(name=f"embed_mean_{i.name}")(embedded)


def _concat(tensors: list, name: str):
    return tensors[0] if len(tensors) == 1 else tf_keras.layers.Concatenate(name=name)(tensors)
