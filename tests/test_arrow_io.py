"""Parquet -> Arrow list batches: the layout TFXIO, TFDV and TFT read."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to

from pipeline.arrow_io import ReadSplitBatches, list_batch_schema, read_first_rows, to_list_batch


def test_values_become_single_item_lists_and_nulls_stay_null():
    flat = pa.RecordBatch.from_pydict(
        {"x": pa.array([1, None, 3], pa.int64()), "s": pa.array(["a", "b", None])}
    )
    batch = to_list_batch(flat)
    assert batch.column(0).to_pylist() == [[1], None, [3]]
    assert batch.column(1).to_pylist() == [[b"a"], [b"b"], None]
    assert batch.schema.field("s").type == pa.large_list(pa.large_binary())


def test_schema_selects_orders_and_casts_columns(taxi):
    schema = list_batch_schema(taxi, ("fare", "payment_type", "trip_start_hour"))
    flat = pa.table(
        {
            "trip_start_hour": pa.array([5, None], pa.int64()),
            "fare": pa.array([1.5, 2.25], pa.float64()),
            "payment_type": pa.array(["Cash", "Credit Card"]),
            "ignored": pa.array([0, 0]),
        }
    )
    batch = to_list_batch(flat, schema)
    assert batch.schema == schema
    assert batch.column(0).type == pa.large_list(pa.float32())
    assert batch.to_pydict() == {
        "fare": [[1.5], [2.25]],
        "payment_type": [[b"Cash"], [b"Credit Card"]],
        "trip_start_hour": [[5], None],
    }


def test_a_missing_column_is_named(taxi):
    schema = list_batch_schema(taxi, ("fare", "tips"))
    with pytest.raises(KeyError, match="'tips'"):
        to_list_batch(pa.table({"fare": [1.0]}), schema)


def test_a_column_of_the_wrong_type_is_named(taxi):
    schema = list_batch_schema(taxi, ("fare",))
    with pytest.raises(TypeError, match="column 'fare' of type string"):
        to_list_batch(pa.table({"fare": ["twelve dollars"]}), schema)


def test_beam_reader_streams_every_row_in_batches(tmp_path, taxi):
    table = pa.table({"fare": pa.array([float(i) for i in range(25)]), "tips": [None] * 25})
    pq.write_table(table, tmp_path / "part-0.parquet", row_group_size=10)
    schema = list_batch_schema(taxi, ("fare", "tips"))
    with beam.Pipeline() as p:
        rows = (
            p
            | ReadSplitBatches(str(tmp_path / "*.parquet"), schema, batch_size=4)
            | beam.FlatMap(lambda b: [(r["fare"][0], r["tips"]) for r in b.to_pylist()])
        )
        assert_that(rows, equal_to([(float(i), None) for i in range(25)]))


def test_first_rows_of_a_split_across_files(tmp_path, taxi):
    schema = list_batch_schema(taxi, ("fare",))
    for part in range(2):
        table = pa.table({"fare": pa.array([float(part * 10 + i) for i in range(3)])})
        pq.write_table(table, tmp_path / f"part-{part}.parquet")
    batch = read_first_rows(tmp_path, schema, 5)
    assert batch.column(0).to_pylist() == [[0.0], [1.0], [2.0], [10.0], [11.0]]
    with pytest.raises(FileNotFoundError, match="no Parquet files"):
        read_first_rows(tmp_path / "missing", schema, 1)
