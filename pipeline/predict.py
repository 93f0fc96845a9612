"""Predict raw rows with an exported SavedModel, the way a serving client would.

Reads raw rows from a split's Parquet files, drops the label-only columns, encodes them as
``tf.Example`` (tfx_bsl's encoder over Arrow list batches) and calls ``serving_default``. The run
calls this in a fresh process, so it proves the export stands alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import tensorflow as tf
from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

from pipeline.arrow_io import list_batch_schema, read_first_rows
from pipeline.background import exit_without_teardown
from pipeline.cli import add_dataset_argument, dataset_from_args, exit_on_usage_error
from pipeline.definition import DatasetDefinition, LabelKind
from pipeline.export import EXAMPLES_INPUT, SERVING_SIGNATURE


def raw_examples(
    dataset: DatasetDefinition,
    split_dir: Path,
    rows: int,
    serving: bool = True,
    spread_over: int | None = None,
) -> tuple[list[bytes], list[dict]]:
    """``rows`` rows of a split as serialized raw ``tf.Example``s and as dicts: the first ones,
    or, with ``spread_over``, rows evenly spaced over the first ``spread_over`` (a split file
    written stratified holds one class after another, and the first rows would all be alike)."""
    columns = tuple(c.name for c in (dataset.serving_columns if serving else dataset.columns))
    schema = list_batch_schema(dataset, columns)
    batch = read_first_rows(split_dir, schema, max(rows, spread_over or 0))
    if spread_over and batch.num_rows > rows:
        picked = np.linspace(0, batch.num_rows - 1, rows).round().astype(np.int64)
        batch = batch.take(pa.array(picked))
    examples = RecordBatchToExamplesEncoder().encode(batch)
    return examples, batch.to_pylist()


def predict_examples(export_dir: Path, examples: list[bytes]) -> dict[str, list]:
    """Call the export's ``serving_default`` on serialized examples."""
    loaded = tf.saved_model.load(str(export_dir))
    serve = loaded.signatures[SERVING_SIGNATURE]
    outputs = serve(**{EXAMPLES_INPUT: tf.constant(examples)})
    return {name: value.numpy().tolist() for name, value in outputs.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_argument(parser)
    parser.add_argument("--export-dir", required=True)
    parser.add_argument("--split-dir", required=True)
    parser.add_argument("--rows", type=int, default=5)
    args = parser.parse_args(argv)
    with exit_on_usage_error():
        dataset = dataset_from_args(args)
    examples, records = raw_examples(dataset, args.split_dir, args.rows, spread_over=1000)
    outputs = predict_examples(args.export_dir, examples)
    predictions = [
        {**answer, "request": _printable(record)}
        for answer, record in zip(describe_outputs(dataset, outputs), records, strict=True)
    ]
    json.dump({"export_dir": str(args.export_dir), "predictions": predictions}, sys.stdout)
    sys.stdout.write("\n")


def describe_outputs(dataset: DatasetDefinition, outputs: dict[str, list]) -> list[dict]:
    """One answer per row: the label's name with the predicted value, class or probability."""
    label = dataset.label
    answers = []
    if dataset.label_kind is LabelKind.REGRESSION:
        for value in outputs["predictions"]:
            answers.append({"label": label.name, "prediction": round(float(value), 6)})
        return answers
    for probabilities, class_id in zip(outputs["probabilities"], outputs["classes"], strict=True):
        answer = {"label": label.name, "class": label.class_names[class_id]}
        if dataset.label_kind is LabelKind.BINARY:
            answer["probability"] = round(float(probabilities), 6)
        else:
            answer["probabilities"] = [round(float(p), 6) for p in probabilities]
        answers.append(answer)
    return answers


def _printable(record: dict) -> dict:
    """Raw request as JSON-friendly scalars (missing -> null)."""
    out = {}
    for key, values in record.items():
        value = values[0] if values else None
        out[key] = value.decode() if isinstance(value, bytes) else value
    return out


if __name__ == "__main__":
    main()
    exit_without_teardown(0)  # the run waits for this process's exit, not its teardown
