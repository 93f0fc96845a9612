"""An export's predictions on a split's raw rows, exactly as serving computes them.

The rows are read from the split's Parquet files (the raw columns and the label the warehouse
computed); the serving columns of each batch are encoded as serialized raw ``tf.Example``s by
tfx_bsl's encoder (what :mod:`pipeline.predict` sends) and answered by one call of the export's
``serving_default`` (the transform graph, then the model). No label or label-only column reaches
the model.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.arrow_io import list_batch_schema, to_list_batch
from pipeline.definition import DatasetDefinition, LabelKind

BATCH_SIZE = 4096


def read_split_table(split_dir: str, columns: list[str]) -> pa.Table:
    """``columns`` of every Parquet file of a split directory (a path or gs:// URI), in order."""
    paths = storage.glob(storage.join(split_dir, "*.parquet"))
    if not paths:
        raise FileNotFoundError(f"no Parquet files in {split_dir}")
    tables = []
    for path in paths:
        with storage.open_read(path) as handle:
            table = pq.read_table(handle)
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise KeyError(f"{path} has no column(s) {missing}; it has {table.column_names}")
        tables.append(table.select(columns))
    return pa.concat_tables(tables).combine_chunks()


def predict(
    dataset: DatasetDefinition, export_dir: str, rows: pa.Table, batch_size: int = BATCH_SIZE
) -> np.ndarray:
    """The export's primary output for every row: the positive-class probability ``[n]``,
    class probabilities ``[n, k]``, or the prediction ``[n]`` on the label's scale."""
    import tensorflow as tf
    from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

    from pipeline.export import EXAMPLES_INPUT, SERVING_SIGNATURE, load_export, primary_output

    names = tuple(c.name for c in dataset.serving_columns)
    schema = list_batch_schema(dataset, names)
    serve = load_export(export_dir).signatures[SERVING_SIGNATURE]
    encoder = RecordBatchToExamplesEncoder()
    key = primary_output(dataset)
    outputs = []
    for start in range(0, rows.num_rows, batch_size):
        batch = to_list_batch(rows.slice(start, batch_size).select(list(names)), schema)
        answer = serve(**{EXAMPLES_INPUT: tf.constant(encoder.encode(batch))})
        if key not in answer:
            raise ValueError(f"{export_dir}: serving_default has no {key!r} output: {list(answer)}")
        outputs.append(answer[key].numpy().astype(np.float64))
    predictions = np.concatenate(outputs) if outputs else np.zeros(0)
    _check_shape(dataset, export_dir, predictions, rows.num_rows)
    return predictions


def _check_shape(dataset: DatasetDefinition, export_dir: str, values: np.ndarray, rows: int):
    if dataset.label_kind is LabelKind.MULTICLASS:
        expected: tuple[int, ...] = (rows, dataset.label.num_classes)
    else:
        expected = (rows,)
    if rows and values.shape != expected:
        raise ValueError(
            f"{export_dir} answers {values.shape} for {rows} rows; {dataset.name}'s "
            f"{dataset.label_kind} label needs {expected}"
        )
