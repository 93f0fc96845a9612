"""Parity proof: the serving graph computes exactly the features training saw.

For N raw rows the features are computed twice:

* the training path: the Beam/TFT ``TransformDataset`` with the stored ``transform_fn``, encoded
  by the same tf.Example encoder as the transform stage and parsed with the transformed schema;
* the serving path: the exported SavedModel's ``transform_features`` signature on serialized raw
  ``tf.Example``s that carry only the serving columns (no label).

Every feature is compared row by row (a passthrough row id keeps rows aligned): integers and
strings exactly, floats within ``FLOAT_RTOL`` relative. The model's prediction on the training
path's features is compared with the export's ``serving_default`` on the raw example. Any
mismatch fails, naming the feature, the row and both values.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import sys
import tempfile
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder
from tfx_bsl.tfxio import tensor_adapter

from pipeline.arrow_io import read_first_rows
from pipeline.cli import add_dataset_argument, dataset_from_args, exit_on_usage_error
from pipeline.definition import DatasetDefinition
from pipeline.example_encoding import encode_examples
from pipeline.export import (
    EXAMPLES_INPUT,
    SERVING_SIGNATURE,
    TRANSFORM_SIGNATURE,
    head_outputs,
    load_export,
    primary_output,
)
from pipeline.raw_schema import tensor_adapter_config
from pipeline.runners import pipeline_options, run_pipeline
from pipeline.train import load_trained_model
from pipeline.transform import tft_context

FLOAT_RTOL = 1e-6
PREDICTION_RTOL = 1e-5
ROW_ID = "__parity_row_id__"


class ParityError(AssertionError):
    """The serving graph disagrees with the training path."""


@dataclasses.dataclass
class ParityReport:
    rows: int
    features_compared: list[str]
    max_deviation: dict[str, float]
    max_prediction_deviation: float | None
    mismatches: list[str]

    @property
    def passed(self) -> bool:
        return not self.mismatches

    def to_manifest(self) -> dict:
        return {
            "passed": self.passed,
            "rows": self.rows,
            "features_compared": self.features_compared,
            "max_relative_deviation": self.max_deviation,
            "max_prediction_deviation": self.max_prediction_deviation,
            "mismatches": self.mismatches[:50],
        }


def read_raw_rows(dataset: DatasetDefinition, split_dir: Path, rows: int) -> pa.RecordBatch:
    """First ``rows`` raw rows of a split as one list batch with every raw column."""
    return read_first_rows(split_dir, tensor_adapter_config(dataset).arrow_schema, rows)


def training_path_features(
    dataset: DatasetDefinition,
    transform_dir: Path,
    raw: pa.RecordBatch,
    beam_args: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """Features of ``raw`` through Beam + TFT, as the transform stage wrote them for training."""
    config = tensor_adapter_config(dataset)
    row_ids = pa.LargeListArray.from_arrays(
        pa.array(np.arange(raw.num_rows + 1, dtype=np.int64)),
        pa.array(np.arange(raw.num_rows, dtype=np.int64)),
    )
    with_ids = pa.RecordBatch.from_arrays(
        [*raw.columns, row_ids], names=[*raw.schema.names, ROW_ID]
    )
    id_config = tensor_adapter.TensorAdapterConfig(
        config.arrow_schema.append(pa.field(ROW_ID, pa.large_list(pa.int64()))),
        config.tensor_representations,
    )
    tft_output = tft.TFTransformOutput(str(transform_dir))
    with tempfile.TemporaryDirectory() as tmp:
        out_prefix = str(Path(tmp) / "transformed")
        p = beam.Pipeline(options=pipeline_options(beam_args))
        with tft_context(tmp, passthrough_keys={ROW_ID}):
            transform_fn = p | tft_beam.ReadTransformFn(str(transform_dir))
            transformed = (
                (p | beam.Create([with_ids]), id_config),
                transform_fn,
            ) | tft_beam.TransformDataset(output_record_batches=True)
            _ = (
                transformed[0]
                | beam.FlatMap(lambda item: encode_examples(item[0]))
                | beam.io.WriteToTFRecord(out_prefix)
            )
            run_pipeline(p, "parity (training path)")
        spec = dict(tft_output.transformed_feature_spec())
        spec[ROW_ID] = tf.io.FixedLenFeature([], tf.int64)
        serialized = [
            r.numpy() for f in glob.glob(out_prefix + "*") for r in tf.data.TFRecordDataset(f)
        ]
    parsed = tf.io.parse_example(tf.constant(serialized), spec)
    order = np.argsort(parsed.pop(ROW_ID).numpy())
    return {name: value.numpy()[order] for name, value in parsed.items()}


def serving_examples(dataset: DatasetDefinition, raw: pa.RecordBatch) -> list[bytes]:
    """Raw rows as a client sends them: serving columns only, as tf.Example."""
    serving = (
        raw.select([c.name for c in dataset.serving_columns])
        if hasattr(raw, "select")
        else (
            pa.RecordBatch.from_arrays(
                [raw.column(raw.schema.get_field_index(c.name)) for c in dataset.serving_columns],
                names=[c.name for c in dataset.serving_columns],
            )
        )
    )
    return RecordBatchToExamplesEncoder().encode(serving)


def compare_features(
    expected: dict[str, np.ndarray], actual: dict[str, np.ndarray], names: list[str]
) -> tuple[dict[str, float], list[str]]:
    """Largest relative deviation per feature and a description of every mismatch."""
    deviations: dict[str, float] = {}
    mismatches: list[str] = []
    for name in names:
        if name not in actual:
            mismatches.append(f"{name}: missing from the serving graph's output")
            continue
        want, got = np.asarray(expected[name]), np.asarray(actual[name])
        if want.shape != got.shape:
            mismatches.append(f"{name}: shape {got.shape} in serving, {want.shape} in training")
            continue
        if np.issubdtype(want.dtype, np.floating):
            scale = np.maximum(np.abs(want), np.abs(got))
            rel = np.where(scale > 0, np.abs(want - got) / np.where(scale > 0, scale, 1), 0.0)
            deviations[name] = float(rel.max()) if rel.size else 0.0
            bad = np.argwhere(rel > FLOAT_RTOL)
        else:
            deviations[name] = 0.0 if np.array_equal(want, got) else float("inf")
            bad = np.argwhere(want != got)
        for index in bad[:5]:
            position = tuple(index)
            mismatches.append(
                f"{name}: row {int(index[0])}: training {want[position]!r} "
                f"!= serving {got[position]!r}"
            )
    return deviations, mismatches


def check_parity(
    dataset: DatasetDefinition,
    transform_dir: Path,
    export_dir: Path,
    split_dir: Path,
    rows: int = 200,
    model_dir: Path | None = None,
    beam_args: list[str] | None = None,
) -> ParityReport:
    """Compare training-path and serving-path features (and predictions) on ``rows`` rows."""
    raw = read_raw_rows(dataset, split_dir, rows)
    expected = training_path_features(dataset, transform_dir, raw, beam_args)
    loaded = load_export(export_dir)
    examples = tf.constant(serving_examples(dataset, raw))
    actual = {
        k: v.numpy()
        for k, v in loaded.signatures[TRANSFORM_SIGNATURE](**{EXAMPLES_INPUT: examples}).items()
    }
    names = [f.output_name for f in dataset.features]
    deviations, mismatches = compare_features(expected, actual, names)
    prediction_deviation = None
    if model_dir is not None:
        model = load_trained_model(model_dir)
        output = model.predict({n: expected[n] for n in names}, verbose=0)
        key = primary_output(dataset)
        trained = head_outputs(dataset, tf.constant(output))[key].numpy().reshape(-1)
        served = loaded.signatures[SERVING_SIGNATURE](**{EXAMPLES_INPUT: examples})
        served = served[key].numpy().reshape(-1)
        diff = np.abs(trained - served) / np.maximum(
            np.maximum(np.abs(trained), np.abs(served)), 1e-12
        )
        prediction_deviation = float(diff.max())
        for row in np.argwhere(diff > PREDICTION_RTOL)[:5, 0]:
            mismatches.append(
                f"prediction: row {int(row)}: model on training features {trained[row]!r} != "
                f"export on raw example {served[row]!r}"
            )
    return ParityReport(raw.num_rows, names, deviations, prediction_deviation, mismatches)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Prove serving features equal training features.")
    add_dataset_argument(parser)
    parser.add_argument("--transform-dir", required=True)
    parser.add_argument("--export-dir", required=True)
    parser.add_argument("--split-dir", required=True)
    parser.add_argument("--model-dir")
    parser.add_argument("--rows", type=int, default=200)
    args, beam_args = parser.parse_known_args(argv)
    with exit_on_usage_error():
        dataset = dataset_from_args(args)
    report = check_parity(
        dataset,
        args.transform_dir,
        args.export_dir,
        args.split_dir,
        args.rows,
        args.model_dir,
        beam_args,
    )
    json.dump(report.to_manifest(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
