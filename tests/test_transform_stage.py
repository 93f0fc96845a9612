"""Stage-level properties of the transform job: reproducible output and flat, streaming writes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import tensorflow as tf

from pipeline.tfrecord_io import finalize_shards
from pipeline.transform import run_transform

pytestmark = pytest.mark.slow


def _files(result) -> dict[str, bytes]:
    examples = Path(result.output_dir) / "examples"
    return {p.name: p.read_bytes() for p in sorted(examples.iterdir())}


def test_transforming_the_same_input_twice_gives_identical_tfrecords(
    taxi, small_splits, transform_output, tmp_path
):
    again = run_transform(taxi, small_splits, tmp_path / "again", ["--runner", "DirectRunner"])
    first, second = _files(transform_output), _files(again)
    assert set(first) == {f"{s}-00000-of-00001.tfrecord.gz" for s in small_splits}
    assert first.keys() == second.keys()
    for name in first:
        assert first[name] == second[name], name
    assert again.rows == transform_output.rows


def test_an_empty_split_still_gets_a_readable_shard(tmp_path):
    (shard,) = finalize_shards(tmp_path, "eval")
    assert Path(shard).name == "eval-00000-of-00001.tfrecord.gz"
    assert list(tf.data.TFRecordDataset(str(shard), compression_type="GZIP")) == []


@pytest.fixture(scope="module")
def single_phase(taxi):
    """A small definition whose analyzers all read raw columns (cacheable per span)."""
    keep = {"trip_miles", "payment_type", "trip_start_hour"}
    return dataclasses.replace(taxi, features=tuple(f for f in taxi.features if f.name in keep))


def test_analyzer_cache_reuses_earlier_spans(single_phase, tmp_path):
    from tests.conftest import make_rows, write_split

    spans = {
        f"day{i}": write_split(tmp_path / f"day{i}", make_rows(800, seed=10 + i)) for i in range(3)
    }
    cache = tmp_path / "cache"
    args = ["--runner", "DirectRunner"]
    first = run_transform(
        single_phase, {"train": spans["day1"]}, tmp_path / "t1", args,
        {k: spans[k] for k in ("day0", "day1")}, cache,
    )  # fmt: skip
    assert first.analysis == {"read": ["day0", "day1"], "from_cache": []}
    second = run_transform(
        single_phase, {"train": spans["day2"]}, tmp_path / "t2", args, spans, cache
    )
    assert second.analysis == {"read": ["day2"], "from_cache": ["day0", "day1"]}
    uncached = run_transform(single_phase, {"train": spans["day2"]}, tmp_path / "t3", args, spans)
    # Same statistics either way: identical vocabulary and identical transformed examples.
    for name in ("payment_type_vocab",):
        cached_vocab = (Path(second.output_dir) / "transform_fn" / "assets" / name).read_bytes()
        assert (
            cached_vocab
            == (Path(uncached.output_dir) / "transform_fn" / "assets" / name).read_bytes()
        )
    assert _files(second) == _files(uncached)


def test_large_splits_are_written_as_several_shards(single_phase, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from pipeline import tfrecord_io
    from tests.conftest import make_rows

    monkeypatch.setattr(tfrecord_io, "SHARD_ROWS", 1000)
    train = tmp_path / "train"
    train.mkdir()
    pq.write_table(make_rows(3000, seed=5), train / "part-0.parquet", row_group_size=1000)
    result = run_transform(
        single_phase, {"train": train}, tmp_path / "t", ["--runner", "DirectRunner"]
    )
    shards = sorted((Path(result.output_dir) / "examples").glob("train-*"))
    assert [s.name for s in shards] == [f"train-{i:05d}-of-00003.tfrecord.gz" for i in range(3)]
    rows = sum(1 for s in shards for _ in tf.data.TFRecordDataset(str(s), compression_type="GZIP"))
    assert rows == result.rows["train"] == 3000


def test_without_a_cache_every_span_is_read_without_tracing_again(taxi, monkeypatch):
    from tensorflow_transform.beam import analysis_graph_builder, analyzer_cache

    from pipeline import transform

    def traced(*args, **kwargs):
        raise AssertionError("traced preprocessing_fn to plan a read that has no cache")

    monkeypatch.setattr(analysis_graph_builder, "get_analysis_dataset_keys", traced)
    keys = {span: analyzer_cache.DatasetKey(span) for span in ("day0", "day1")}
    needed = transform._spans_to_read(None, None, keys, {})
    assert needed == set(keys.values())
