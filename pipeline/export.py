"""Export a SavedModel that answers raw requests with the training-time preprocessing inside.

The transform graph (with its full-pass statistics as constants and its vocabulary files as
assets) is attached to the trained Keras model, so the export is self-contained: serving needs no
other directory and cannot apply different preprocessing than training did.

Signatures:

* ``serving_default``: serialized raw ``tf.Example``s (no label) -> ``probabilities``, ``classes``.
* ``transform_features``: serialized raw ``tf.Example``s -> every transformed feature, exactly as
  the model sees it; the parity check compares these with the Beam/TFT path's output.

Exports go to ``<model_base>/<version>/``, the layout TensorFlow Serving reads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import tensorflow as tf
import tensorflow_transform as tft

from pipeline.artifacts import staged_directory
from pipeline.dataset import DatasetDefinition
from pipeline.datasets import get_dataset
from pipeline.raw_schema import raw_feature_spec
from pipeline.train import load_trained_model

SERVING_SIGNATURE = "serving_default"
TRANSFORM_SIGNATURE = "transform_features"
EXAMPLES_INPUT = "examples"
DECISION_THRESHOLD = 0.5


@dataclasses.dataclass
class ExportResult:
    export_dir: Path
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

    def transform(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        raw = tf.io.parse_example(serialized, serving_spec)
        transformed = tft_layer(raw)
        return {name: transformed[name] for name in feature_names}

    @tf.function(input_signature=[examples_spec])
    def serve_examples(examples):
        probabilities = tf.reshape(model(transform(examples)), [-1])
        classes = tf.cast(probabilities >= DECISION_THRESHOLD, tf.int64)
        return {"probabilities": probabilities, "classes": classes}

    @tf.function(input_signature=[examples_spec])
    def transform_features(examples):
        return transform(examples)

    return {
        SERVING_SIGNATURE: serve_examples.get_concrete_function(),
        TRANSFORM_SIGNATURE: transform_features.get_concrete_function(),
    }


def export_serving_model(
    dataset: DatasetDefinition,
    model_dir: Path,
    transform_dir: Path,
    model_base: Path,
    version: int | None = None,
) -> ExportResult:
    """Write ``<model_base>/<version>/`` atomically and return where it went."""
    started = time.perf_counter()
    version = version or int(time.time())
    model = load_trained_model(model_dir)
    tft_output = tft.TFTransformOutput(str(transform_dir))
    # Tracking the layer on the model makes the transform graph and its assets part of the export.
    model.tft_layer = tft_output.transform_features_layer()
    signatures = _serving_functions(dataset, model, model.tft_layer)
    export_dir = Path(model_base) / str(version)
    with staged_directory(export_dir) as staging:
        tf.saved_model.save(model, str(staging), signatures=signatures)
    return ExportResult(export_dir, version, time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Export the serving SavedModel.")
    parser.add_argument("--dataset", default="taxi")
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--transform-dir", type=Path, required=True)
    parser.add_argument("--model-base", type=Path, required=True)
    parser.add_argument("--version", type=int)
    args = parser.parse_args(argv)
    result = export_serving_model(
        get_dataset(args.dataset), args.model_dir, args.transform_dir, args.model_base, args.version
    )
    print(json.dumps(result.to_manifest(), indent=2))


if __name__ == "__main__":
    main()
