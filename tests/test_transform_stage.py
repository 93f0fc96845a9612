"""Stage-level properties of the transform job: reproducible output and flat, streaming writes."""

from __future__ import annotations

import pytest
import tensorflow as tf

from pipeline.tfrecord_io import finalize_shards
from pipeline.transform import run_transform

pytestmark = pytest.mark.slow


def _files(result) -> dict[str, bytes]:
    examples = result.output_dir / "examples"
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
    assert shard.name == "eval-00000-of-00001.tfrecord.gz"
    assert list(tf.data.TFRecordDataset(str(shard), compression_type="GZIP")) == []
