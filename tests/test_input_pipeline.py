"""The training input: splits parsed once into memory, their batches, the streaming fallback."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from pipeline import train
from pipeline.tfrecord_io import CorruptRecordFile, read_gzip_records
from pipeline.train import ParsedSplit, SplitBatches, TrainConfig, load_split, parse_split

ROWS = 10


def _numbered_split() -> ParsedSplit:
    """Row i has feature x = i, feature y = -i and label 2 * i."""
    x = tf.range(ROWS, dtype=tf.int64)
    return ParsedSplit({"x": x, "y": -x}, 2 * x)


def _stream(dataset: tf.data.Dataset, batches: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs, ys, labels = [], [], []
    for features, label in dataset.take(batches):
        xs.append(features["x"].numpy())
        ys.append(features["y"].numpy())
        labels.append(label.numpy())
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(labels)


def test_one_ordered_pass_without_shuffle_or_repeat():
    batches = list(_numbered_split().batches(4, shuffle=False, repeat=False))
    assert [len(label) for _, label in batches] == [4, 4, 2]
    x, y, labels = _stream(_numbered_split().batches(4, False, False), 10)
    np.testing.assert_array_equal(x, np.arange(ROWS))
    np.testing.assert_array_equal(y, -x)
    np.testing.assert_array_equal(labels, 2 * x)


def test_every_epoch_is_a_fresh_permutation_of_every_row():
    x, y, labels = _stream(_numbered_split().batches(4, shuffle=True, repeat=True, seed=7), 15)
    epochs = x[: 6 * ROWS].reshape(6, ROWS)
    for epoch in epochs:
        np.testing.assert_array_equal(np.sort(epoch), np.arange(ROWS))
    assert len({tuple(epoch) for epoch in epochs}) > 1  # reshuffled, not one order repeated
    np.testing.assert_array_equal(y, -x)  # features and label of a row stay together
    np.testing.assert_array_equal(labels, 2 * x)


def test_the_same_seed_gives_the_same_batches():
    first = _stream(_numbered_split().batches(3, True, True, seed=1), 8)[0]
    again = _stream(_numbered_split().batches(3, True, True, seed=1), 8)[0]
    other = _stream(_numbered_split().batches(3, True, True, seed=2), 8)[0]
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_names_keep_only_those_features():
    features, label = next(iter(_numbered_split().batches(4, False, False, names={"y"})))
    assert set(features) == {"y"} and len(label) == 4


def test_a_parsed_split_holds_every_row_of_the_split(transform_output, taxi):
    tft_output = tft.TFTransformOutput(transform_output.output_dir)
    pattern = transform_output.example_patterns["eval"]
    parsed = parse_split(pattern, tft_output, taxi.label.name)
    assert parsed.rows == transform_output.rows["eval"]
    spec = tft_output.transformed_feature_spec()
    assert set(parsed.features) == set(spec) - {taxi.label.name}
    assert all(v.shape[0] == parsed.rows for v in parsed.features.values())


def test_splits_above_the_limit_stream_the_same_rows(transform_output, taxi):
    tft_output = tft.TFTransformOutput(transform_output.output_dir)
    patterns = {s: transform_output.example_patterns[s] for s in ("train", "eval")}
    assert load_split(patterns["eval"], tft_output, taxi.label.name, limit_bytes=0) is None
    in_memory = SplitBatches(tft_output, taxi.label.name, patterns, TrainConfig())
    assert in_memory.parsed["eval"] is not None
    streamed = SplitBatches(tft_output, taxi.label.name, patterns, TrainConfig())
    streamed.parsed = {split: None for split in patterns}  # as for splits above the limit
    for split in patterns:
        np.testing.assert_array_equal(in_memory.labels(split), streamed.labels(split))
    rows = {}
    for name, source in (("memory", in_memory), ("stream", streamed)):
        batches = list(source.batches("eval"))
        rows[name] = {k: np.concatenate([f[k].numpy() for f, _ in batches]) for k in batches[0][0]}
    for key, values in rows["memory"].items():
        np.testing.assert_array_equal(values, rows["stream"][key])


# ---- the streamed path: windows of whole shards -----------------------------------------------

SHARD_SIZES = (5, 7, 4)  # 16 rows over three shards: row i has x = i, y = -i, label 2 * i


@pytest.fixture
def numbered_shards(tmp_path):
    """Three gzipped shards of the numbered rows, and a transform output that describes them."""
    spec = {n: tf.io.FixedLenFeature([], tf.int64) for n in ("x", "y", "label")}
    start = 0
    for index, size in enumerate(SHARD_SIZES):
        path = tmp_path / f"train-{index:05d}-of-{len(SHARD_SIZES):05d}.tfrecord.gz"
        with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
            for i in range(start, start + size):
                values = {"x": i, "y": -i, "label": 2 * i}
                feature = {
                    n: tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
                    for n, v in values.items()
                }
                example = tf.train.Example(features=tf.train.Features(feature=feature))
                writer.write(example.SerializeToString())
        start += size
    output = type("TransformOutput", (), {"transformed_feature_spec": lambda self: spec})()
    return str(tmp_path / "train-*"), output


def _streamed(numbered_shards, batch_size, shuffle, repeat, seed=42, batches=None):
    pattern, output = numbered_shards
    dataset = train.make_dataset(pattern, output, "label", batch_size, shuffle, repeat, seed)
    dataset = dataset.take(batches) if batches else dataset
    return [(f["x"].numpy(), f["y"].numpy(), label.numpy()) for f, label in dataset]


def test_a_streamed_pass_without_shuffle_is_every_row_in_file_order(numbered_shards):
    batches = _streamed(numbered_shards, 5, shuffle=False, repeat=False)
    assert [len(x) for x, _, _ in batches] == [5, 5, 5, 1]  # windows do not cut batches short
    x = np.concatenate([x for x, _, _ in batches])
    np.testing.assert_array_equal(x, np.arange(16))
    for x, y, label in batches:  # every feature of a row stays with its row
        np.testing.assert_array_equal(y, -x)
        np.testing.assert_array_equal(label, 2 * x)


def test_streamed_training_batches_are_full_shuffled_and_cover_every_row(numbered_shards):
    batches = _streamed(numbered_shards, 4, shuffle=True, repeat=True, batches=40)
    assert {len(x) for x, _, _ in batches} == {4}  # epochs topped up from the next one
    x = np.concatenate([x for x, _, _ in batches])
    counts = np.bincount(x, minlength=16)
    assert counts.min() >= 9 and counts.max() <= 11  # 160 rows: 10 epochs, give or take
    assert not np.array_equal(x[:16], np.arange(16))
    first_shard, other_shards = set(range(5)), set(range(5, 16))
    assert any(set(b) & first_shard and set(b) & other_shards for b, _, _ in batches)
    for x, y, label in batches:
        np.testing.assert_array_equal(y, -x)
        np.testing.assert_array_equal(label, 2 * x)


def test_streamed_batches_follow_the_seed(numbered_shards):
    def xs(seed):
        return np.concatenate(
            [x for x, _, _ in _streamed(numbered_shards, 4, True, True, seed, 12)]
        )

    np.testing.assert_array_equal(xs(1), xs(1))
    assert not np.array_equal(xs(1), xs(2))


def test_an_empty_streamed_split_gives_no_batches_even_repeated(tmp_path):
    spec = {n: tf.io.FixedLenFeature([], tf.int64) for n in ("x", "label")}
    with tf.io.TFRecordWriter(str(tmp_path / "train-00000-of-00001.tfrecord.gz"), "GZIP"):
        pass
    output = type("TransformOutput", (), {"transformed_feature_spec": lambda self: spec})()
    pattern = str(tmp_path / "train-*")
    for repeat in (False, True):
        assert list(train.make_dataset(pattern, output, "label", 4, True, repeat)) == []


@pytest.mark.filterwarnings("ignore")
def test_every_split_is_parsed_once_for_the_models_of_one_process(
    transform_output, taxi, tmp_path, monkeypatch
):
    parsed = []

    def counting_parse(pattern, tft_output, label):
        parsed.append(pattern)
        return parse_split(pattern, tft_output, label)

    monkeypatch.setattr(train, "parse_split", counting_parse)
    config = TrainConfig(train_steps=2, steps_per_epoch=2)
    patterns = transform_output.example_patterns
    result = train.train_and_evaluate(
        taxi, transform_output.output_dir, patterns, tmp_path / "model", config
    )
    assert result.steps == 2 and sorted(parsed) == sorted(patterns.values())
    parsed.clear()
    request = train.BaselineRequest.of(taxi, transform_output.output_dir, patterns, config)
    trained = request.run(taxi, str(tmp_path / "logs"))
    assert (trained.wide_steps, trained.no_derived_steps) == (2, 2)
    assert sorted(parsed) == sorted(patterns.values())  # both baselines: one parse


@pytest.mark.filterwarnings("ignore")
def test_baselines_trained_in_a_child_process_equal_those_trained_here(
    transform_output, taxi, tmp_path
):
    config = TrainConfig(train_steps=30, steps_per_epoch=10)
    request = train.BaselineRequest.of(
        taxi, transform_output.output_dir, transform_output.example_patterns, config
    )
    assert request.kinds == ("wide", "no_derived") and request.can_run_beside(taxi)
    child = request.collect(request.start(), str(tmp_path / "child"))
    here = request.run(taxi, str(tmp_path / "here"))
    assert child.metrics == here.metrics  # every baseline's, exactly
    assert (child.wide_steps, child.no_derived_steps) == (here.wide_steps, here.no_derived_steps)
    assert {"wide_baseline_eval", "no_derived_baseline_eval"} <= set(child.metrics)
    for logs in (tmp_path / "child", tmp_path / "here"):
        assert (logs / "wide" / "train").is_dir() and (logs / "no_derived" / "train").is_dir()


def _write_gzip_records(path, records: list[bytes]) -> None:
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    with tf.io.TFRecordWriter(str(path), options) as writer:
        for record in records:
            writer.write(record)


def test_a_shard_read_whole_gives_the_records_tensorflow_reads(tmp_path):
    records = [b"", b"x", bytes(range(256)) * 40, *(f"row {i}".encode() for i in range(1000))]
    path = tmp_path / "part.tfrecord.gz"
    _write_gzip_records(path, records)
    by_tensorflow = [r.numpy() for r in tf.data.TFRecordDataset(str(path), "GZIP")]
    assert read_gzip_records(str(path)) == by_tensorflow == records


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "record cut off"])
def test_a_damaged_shard_is_refused_with_its_name(tmp_path, damage):
    path = tmp_path / "part.tfrecord.gz"
    _write_gzip_records(path, [f"record {i}".encode() * 20 for i in range(200)])
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "flipped byte":
        data[len(data) // 2] ^= 0x40
    else:  # a whole gzip stream whose last record lacks its bytes
        records = gzip.decompress(bytes(data))
        data = bytearray(gzip.compress(records[:-3]))
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptRecordFile, match=r"part\.tfrecord\.gz"):
        read_gzip_records(str(path))


def test_a_killed_baselines_process_leaves_nothing_behind(transform_output, taxi):
    request = train.BaselineRequest.of(
        taxi, transform_output.output_dir, transform_output.example_patterns, TrainConfig()
    )
    started = request.start()
    child_dir = Path(started.process.args[-1]).parent  # the request and the child's logs
    assert child_dir.is_dir()
    started.kill()  # the run stopped before the baselines stage collected it
    assert started.process.poll() is not None and not child_dir.exists()
