"""Export a SavedModel that answers raw requests with the training-time preprocessing inside.

The transform graph (with its full-pass statistics as constants and its vocabulary files as
assets) is attached to the trained Keras model, so the export is self-contained: serving needs no
other directory and cannot apply different preprocessing than training did.

Signatures:

* ``serving_default``: serialized raw ``tf.Example``s (no label) -> the head's outputs
  (:func:`head_outputs`): ``probabilities`` ``[batch]`` (positive class) and ``classes`` for a
  binary label; ``probabilities`` ``[batch, k]`` and ``classes`` (the argmax) for a multi-class
  one; ``predictions`` ``[batch]`` on the label's scale for regression.
* ``serving_raw``: the raw serving columns as named tensors, for JSON clients -> the same
  outputs, through the same transform layer and model.
* ``transform_features``: serialized raw ``tf.Example``s -> every transformed feature, exactly as
  the model sees it; the parity check compares these with the Beam/TFT path's output.
* ``classification`` (binary and multi-class heads) or ``regression`` (regression heads): TF
  Serving's Classify / Regress API shapes over ``serving_default``, see :func:`head_signatures`.

``serving_raw`` takes one 1-D tensor per serving column of the dataset definition (every column,
in every request; dtype from :func:`pipeline.raw_schema.tf_dtype`: ``int64``, ``float32`` or
``string``), one element per row. TF Serving's REST API requires every named input in every
instance and rectangular tensors, so a missing value cannot be left out or sent as ``null``; it
is marked in-band, per type (:data:`MISSING_VALUES`):

* ``FLOAT64`` columns: ``NaN`` (TF Serving's JSON accepts the ``NaN`` token for float tensors);
* ``INT64`` (and ``TIMESTAMP``) columns: ``-9007199254740991`` (:data:`MISSING_INT64`, the
  smallest integer a JavaScript client can send exactly);
* ``STRING`` columns: the empty string (as TF Serving requires of any input named ``*_bytes``,
  such a column's values travel as ``{"b64": ...}``).

A TF Serving REST request is ``{"signature_name": "serving_raw", "instances": [{"fare": 12.5,
"company": "", "trip_seconds": -9007199254740991, ...}, ...]}`` (:func:`raw_instances` builds the
instances from rows with ``None`` for missing values).

The signature turns each column into the ``SparseTensor`` ``[batch, 1]`` that ``parse_example``
makes of a VarLen feature (the marked rows left empty), so the transform graph imputes missing
values exactly as it does for a ``tf.Example`` without the feature. The markers are therefore
not values: a real empty string or NaN is read as missing (for a feature whose imputation
default is itself ``""`` that changes nothing). A RaggedTensor input would say "missing"
structurally, but a signature flattens it into values and row-splits tensors that TF Serving's
row format cannot carry.

Exports go to ``<model_base>/<version>/``, the layout TensorFlow Serving reads.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from pipeline import canonical_saved_model, storage
from pipeline.cli import add_dataset_argument, dataset_from_args, exit_on_usage_error
from pipeline.definition import TYPE_FACTS, ColumnType, DatasetDefinition, LabelKind
from pipeline.raw_schema import raw_feature_spec, tf_dtype
from pipeline.train import load_trained_model

SERVING_SIGNATURE = "serving_default"
RAW_SIGNATURE = "serving_raw"
EXPORT_SEED = 42  # the training default; any fixed value gives every process the same bytes
TRANSFORM_SIGNATURE = "transform_features"
EXAMPLES_INPUT = "examples"
DECISION_THRESHOLD = 0.5

# How a ``serving_raw`` client marks a missing value, by the column's split-file type.
MISSING_VALUES: dict[str, Any] = {
    ColumnType(kind).split_file_type: TYPE_FACTS[ColumnType(kind)].missing_marker
    for kind in ("INT64", "FLOAT64", "STRING")
}
MISSING_INT64 = MISSING_VALUES["INT64"]

# The TF Serving API signature each label kind gets (see :func:`head_signatures`).
CLASSIFICATION_SIGNATURE = "classification"
REGRESSION_SIGNATURE = "regression"
API_INPUT = "inputs"  # TF Serving's Classify / Regress APIs feed serialized examples here
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


@dataclasses.dataclass
class ExportResult:
    export_dir: str
    version: int
    seconds: float

    def to_manifest(self) -> dict:
        return {
            "export_dir": str(self.export_dir),
            "version": self.version,
            "seconds": round(self.seconds, 3),
        }


def _serving_functions(dataset: DatasetDefinition, model, tft_layer) -> dict:
    serving_spec = raw_feature_spec(dataset, serving=True)
    feature_names = [f.output_name for f in dataset.features]
    examples_spec = tf.TensorSpec(shape=[None], dtype=tf.string, name=EXAMPLES_INPUT)
    raw_specs = {
        c.name: tf.TensorSpec(shape=[None], dtype=tf_dtype(c.type), name=c.name)
        for c in dataset.serving_columns
    }
    kinds = [(c.name, c.type.split_file_type) for c in dataset.serving_columns]
    # What parse_example makes of serving_spec (every raw column is VarLen), and _marked_to_sparse
    # of a raw request. The signatures share the two functions below, each traced once: every
    # call of the TFT layer in a trace prunes the transform graph again (about 0.7 s), and each
    # signature traced the Keras model anew. No function here branches on a tensor, so none is
    # converted by AutoGraph (which rewrote the source of every layer and TFT function called:
    # about 1 s). With both, the export takes 4 s instead of 6 s on the default dataset.
    parsed_spec = {
        c.name: tf.SparseTensorSpec([None, None], tf_dtype(c.type)) for c in dataset.serving_columns
    }

    @tf.function(input_signature=[parsed_spec], autograph=False)
    def transform(raw: dict) -> dict[str, tf.Tensor]:
        transformed = tft_layer(raw)
        return {name: transformed[name] for name in feature_names}

    @tf.function(input_signature=[parsed_spec], autograph=False)
    def predict(raw: dict) -> dict[str, tf.Tensor]:
        return head_outputs(dataset, model(transform(raw)))

    @tf.function(input_signature=[examples_spec], autograph=False)
    def serve_examples(examples):
        return predict(tf.io.parse_example(examples, serving_spec))

    @tf.function(input_signature=[raw_specs], autograph=False)
    def serve_raw(features):
        return predict({name: _marked_to_sparse(features[name], kind) for name, kind in kinds})

    @tf.function(input_signature=[examples_spec], autograph=False)
    def transform_features(examples):
        return transform(tf.io.parse_example(examples, serving_spec))

    return {
        SERVING_SIGNATURE: serve_examples.get_concrete_function(),
        RAW_SIGNATURE: serve_raw.get_concrete_function(),
        TRANSFORM_SIGNATURE: transform_features.get_concrete_function(),
    }


def head_outputs(dataset: DatasetDefinition, output: tf.Tensor) -> dict[str, tf.Tensor]:
    """The served outputs of the model's output tensor, by label kind (see the module doc)."""
    kind = dataset.label_kind
    if kind is LabelKind.BINARY:
        probabilities = tf.reshape(output, [-1])
        classes = tf.cast(probabilities >= DECISION_THRESHOLD, tf.int64)
        return {"probabilities": probabilities, "classes": classes}
    if kind is LabelKind.MULTICLASS:
        return {"probabilities": output, "classes": tf.argmax(output, axis=1, output_type=tf.int64)}
    predictions = tf.reshape(output, [-1])
    if getattr(dataset.label, "log1p", False):
        predictions = tf.math.expm1(predictions)
    return {"predictions": predictions}


def primary_output(dataset: DatasetDefinition) -> str:
    """The output a client reads first: ``probabilities`` or, for regression, ``predictions``."""
    return "predictions" if dataset.label_kind is LabelKind.REGRESSION else "probabilities"


def _marked_to_sparse(values: tf.Tensor, kind: str) -> tf.SparseTensor:
    """``[batch]`` values with missing markers -> the VarLen ``SparseTensor [batch, 1]``."""
    if kind == "FLOAT64":
        present = tf.logical_not(tf.math.is_nan(values))
    else:
        present = tf.not_equal(values, tf.constant(MISSING_VALUES[kind], dtype=values.dtype))
    rows = tf.where(present)
    return tf.SparseTensor(
        indices=tf.concat([rows, tf.zeros_like(rows)], axis=1),
        values=tf.boolean_mask(values, present),
        dense_shape=tf.stack([tf.shape(values, out_type=tf.int64)[0], tf.constant(1, tf.int64)]),
    )


def head_signatures(
    kind: LabelKind,
    serving_default: Any,
    class_labels: tuple[str, ...] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """TF Serving's Classify or Regress signature over ``serving_default``, and its method name.

    TF Serving's ``:classify`` needs a signature whose method_name is
    ``tensorflow/serving/classify``, with one string input ``inputs`` (serialized examples) and
    outputs ``classes`` (DT_STRING ``[batch, k]``) and ``scores`` (DT_FLOAT ``[batch, k]``);
    ``:regress`` needs ``tensorflow/serving/regress``, input ``inputs`` and output ``outputs``
    (DT_FLOAT ``[batch]``). ``tf.saved_model.save`` writes every signature as
    ``tensorflow/serving/predict``, so :func:`set_signature_methods` rewrites the method names
    after the save. The new signature calls ``serving_default``, so it cannot disagree with it.

    ``serving_default`` outputs, by label ``kind``: binary: ``probabilities [batch]`` of the
    positive class; multi-class: ``probabilities [batch, k]``; regression: ``predictions
    [batch]``. Classes are named ``class_labels`` (the label's ``class_names``), by default
    ``"0"`` .. ``"k-1"``.
    """
    inputs_spec = tf.TensorSpec(shape=[None], dtype=tf.string, name=API_INPUT)

    def predictions(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        return serving_default(**{EXAMPLES_INPUT: inputs})

    if kind is LabelKind.REGRESSION:

        @tf.function(input_signature=[inputs_spec], autograph=False)
        def regress(inputs):
            values = tf.reshape(predictions(inputs)["predictions"], [-1])
            return {"outputs": tf.cast(values, tf.float32)}

        return {REGRESSION_SIGNATURE: regress.get_concrete_function()}, {
            REGRESSION_SIGNATURE: REGRESS_METHOD
        }
    if kind not in (LabelKind.BINARY, LabelKind.MULTICLASS):
        raise ValueError(f"unknown label kind {kind!r}; known: {', '.join(LabelKind)}")

    @tf.function(input_signature=[inputs_spec], autograph=False)
    def classify(inputs):
        probabilities = tf.cast(predictions(inputs)["probabilities"], tf.float32)
        if kind is LabelKind.BINARY:
            positive = tf.reshape(probabilities, [-1, 1])
            scores = tf.concat([1.0 - positive, positive], axis=1)
        else:
            scores = probabilities
        count = scores.shape[1]
        labels = class_labels or tuple(str(k) for k in range(count))
        if len(labels) != count:
            raise ValueError(f"{len(labels)} class labels for {count} classes")
        classes = tf.tile(tf.constant([list(labels)]), [tf.shape(scores)[0], 1])
        return {"classes": classes, "scores": scores}

    return {CLASSIFICATION_SIGNATURE: classify.get_concrete_function()}, {
        CLASSIFICATION_SIGNATURE: CLASSIFY_METHOD
    }


def set_signature_methods(export_dir: str, methods: Mapping[str, str]) -> None:
    """Rewrite the method_name of the given signatures in a saved export (before publishing).

    Uses TensorFlow's own ``MethodNameUpdater``, then writes the fingerprint again: it holds a
    checksum of ``saved_model.pb``.
    """
    from tensorflow.python.saved_model import fingerprinting_utils

    updater = tf.compat.v1.saved_model.signature_def_utils.MethodNameUpdater(export_dir)
    for signature, method in methods.items():
        updater.replace_method_name(signature_key=signature, method_name=method)
    updater.save()
    fingerprinting_utils.write_fingerprint(export_dir)


def raw_inputs(
    dataset: DatasetDefinition, rows: Iterable[Mapping[str, Any]]
) -> dict[str, np.ndarray]:
    """``serving_raw`` inputs for raw rows: one array per serving column, markers for missing.

    A row maps column names to a value, ``None``, or a list of at most one value (the form
    :func:`pipeline.predict.raw_examples` returns); an absent column is missing.
    """
    rows = list(rows)
    inputs = {}
    for column in dataset.serving_columns:
        kind = column.type.split_file_type
        marker = MISSING_VALUES[kind]
        values = [_scalar(row.get(column.name), column.name, marker) for row in rows]
        if kind == "STRING":
            inputs[column.name] = np.array(
                [v.encode() if isinstance(v, str) else v for v in values], dtype=object
            )
        else:
            inputs[column.name] = np.array(values, dtype=tf_dtype(column.type).as_numpy_dtype)
    return inputs


def raw_instances(dataset: DatasetDefinition, rows: Iterable[Mapping[str, Any]]) -> list[dict]:
    """The same rows as TF Serving REST ``instances`` for ``serving_raw`` (JSON-ready values)."""
    instances = []
    for row in rows:
        instance = {}
        for column in dataset.serving_columns:
            value = _scalar(
                row.get(column.name), column.name, MISSING_VALUES[column.type.split_file_type]
            )
            instance[column.name] = value.decode() if isinstance(value, bytes) else value
        instances.append(instance)
    return instances


def _scalar(value: Any, name: str, marker: Any) -> Any:
    if isinstance(value, list | tuple):
        if len(value) > 1:
            raise ValueError(f"{name}: serving_raw takes one value per row, got {value!r}")
        value = value[0] if value else None
    return marker if value is None else value


def export_serving_model(
    dataset: DatasetDefinition,
    model_dir: str | Path,
    transform_dir: str | Path,
    model_base: str | Path,
    version: int | None = None,
) -> ExportResult:
    """Write ``<model_base>/<version>/`` atomically and return where it went."""
    started = time.perf_counter()
    version = version or int(time.time())
    # Ops traced under a global seed carry it as an attribute: the export must not depend on
    # whether training (which seeds) ran earlier in this process.
    tf.random.set_seed(EXPORT_SEED)
    model = load_trained_model(model_dir)
    tft_output = tft.TFTransformOutput(str(transform_dir))
    # Tracking the layer on the model makes the transform graph and its assets part of the export.
    model.tft_layer = tft_output.transform_features_layer()
    signatures = _serving_functions(dataset, model, model.tft_layer)
    api_signatures, methods = head_signatures(
        dataset.label_kind, signatures[SERVING_SIGNATURE], dataset.label.class_names
    )
    signatures.update(api_signatures)
    export_dir = storage.join(model_base, str(version))
    with storage.staged_directory(export_dir) as staging:
        # Only the signatures matter to serving: without Keras' traced layer functions (155 ->
        # 18 functions) and the optimizer's slots the save takes 0.9 s instead of 3.0 s and
        # every tf.saved_model.load of the export 1.1 s instead of 2.4 s.
        model.save(
            staging,
            save_format="tf",
            signatures=signatures,
            save_traces=False,
            include_optimizer=False,
        )
        set_signature_methods(staging, methods)
        canonical_saved_model.canonicalize(staging)
    return ExportResult(export_dir, version, time.perf_counter() - started)


def load_export(export_dir: str | Path) -> Any:
    """``tf.saved_model.load`` of an export, once per process for the same bytes.

    The parity proof, the online replay and the evaluate stage of one run all answer rows
    through the same export (a load takes about 1 s). The cache key includes the export's
    fingerprint file (TensorFlow's checksums of its graph and variables), so a directory whose
    contents were replaced is loaded again; an export without one is always loaded afresh.
    """
    fingerprint_path = storage.join(str(export_dir), canonical_saved_model.FINGERPRINT_FILE)
    if not storage.isfile(fingerprint_path):
        return tf.saved_model.load(str(export_dir))
    return _load_fingerprinted(str(export_dir), storage.read_bytes(fingerprint_path))


@functools.lru_cache(maxsize=2)  # a run's candidate and the served version it is judged against
def _load_fingerprinted(export_dir: str, fingerprint: bytes) -> Any:
    return tf.saved_model.load(export_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Export the serving SavedModel.")
    add_dataset_argument(parser)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--transform-dir", required=True)
    parser.add_argument("--model-base", required=True, help="a path or gs:// URI")
    parser.add_argument("--version", type=int)
    args = parser.parse_args(argv)
    with exit_on_usage_error():
        dataset = dataset_from_args(args)
    result = export_serving_model(
        dataset, args.model_dir, args.transform_dir, args.model_base, args.version
    )
    print(json.dumps(result.to_manifest(), indent=2))


if __name__ == "__main__":
    main()
