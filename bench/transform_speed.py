"""Transform stage speed and memory against a NumPy floor measured in the same run.

    python bench/transform_speed.py --rows 1000000 [--rows 2000000] [--beam-arg=...]

For each size it writes synthetic taxi rows to Parquet, then times in separate processes (so
each has its own peak RSS):

* ``floor``: the least any transform can do: read the Parquet, compute a full-pass statistic per
  column in NumPy (mean/std for numbers, a vocabulary for strings), apply it, encode tf.Examples
  with tfx_bsl's C++ encoder and write gzipped TFRecords (the same zlib level as the stage);
* ``stage``: ``pipeline.transform.run_transform`` on the train split: TFT analyze over the full
  taxi definition + transform + write, on Beam's DirectRunner.

It prints seconds, rows/s, peak RSS and the ratio stage/floor. Ratios, not absolute seconds, are
the result: both sides run on the same machine in the same minutes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_parquet(rows: int, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.datasets import get_dataset
    from pipeline.synthetic import generate

    dataset = get_dataset("taxi")
    types = {"INT64": pa.int64(), "FLOAT64": pa.float64(), "STRING": pa.string()}
    schema = pa.schema([(c.name, types[c.type.split_file_type]) for c in dataset.columns])
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, schema) as writer:
        for frame in generate(rows, 7, date(2024, 1, 1), 60):
            stamp = frame["trip_start_timestamp"]
            if str(stamp.dtype).startswith("datetime"):
                frame["trip_start_timestamp"] = stamp.astype("int64") // 10**9
            table = pa.Table.from_pandas(frame[list(dataset.column_names)], preserve_index=False)
            writer.write_table(table.cast(schema))


def floor(parquet: Path, out_dir: Path) -> int:
    """Full-pass NumPy statistics, applied, encoded by tfx_bsl, written as gzipped TFRecords."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import tensorflow as tf
    from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

    from pipeline.tfrecord_io import COMPRESSION_LEVEL

    table = pq.read_table(parquet)
    features = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if pa.types.is_string(column.type):
            values = column.fill_null("").to_numpy(zero_copy_only=False)
            _, ids = np.unique(values, return_inverse=True)
            features[name] = ids.astype(np.int64)
        else:
            values = column.to_numpy(zero_copy_only=False).astype(np.float64)
            values = np.where(np.isnan(values), np.nanmean(values), values)
            features[name] = ((values - values.mean()) / (values.std() or 1.0)).astype(np.float32)
    rows = table.num_rows
    offsets = pa.array(np.arange(rows + 1, dtype=np.int64))
    batch = pa.RecordBatch.from_arrays(
        [pa.LargeListArray.from_arrays(offsets, pa.array(v)) for v in features.values()],
        names=list(features),
    )
    options = tf.io.TFRecordOptions(compression_type="GZIP", compression_level=COMPRESSION_LEVEL)
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder = RecordBatchToExamplesEncoder()
    with tf.io.TFRecordWriter(str(out_dir / "floor.tfrecord.gz"), options) as writer:
        for start in range(0, rows, 65536):
            for example in encoder.encode(batch.slice(start, 65536)):
                writer.write(example)
    return rows


def stage(parquet: Path, out_dir: Path, beam_args: list[str]) -> int:
    from pipeline.datasets import get_dataset
    from pipeline.transform import run_transform

    result = run_transform(get_dataset("taxi"), {"train": parquet.parent}, out_dir, beam_args)
    return result.rows["train"]


def _child(kind: str, parquet: Path, out_dir: Path, beam_args: list[str]) -> None:
    import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)

    started = time.perf_counter()
    rows = floor(parquet, out_dir) if kind == "floor" else stage(parquet, out_dir, beam_args)
    seconds = time.perf_counter() - started
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(json.dumps({"kind": kind, "rows": rows, "seconds": seconds, "peak_rss_gb": peak_gb}))


def _measure(kind: str, parquet: Path, out_dir: Path, beam_args: list[str]) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--parquet", str(parquet),
               "--out", str(out_dir), *[f"--beam-arg={a}" for a in beam_args]]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append")
    parser.add_argument("--beam-arg", action="append", default=[])
    parser.add_argument("--child", choices=["floor", "stage"])
    parser.add_argument("--parquet", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    beam_args = ["--runner", "DirectRunner", *args.beam_arg]
    if args.child:
        _child(args.child, args.parquet, args.out, beam_args)
        return
    for rows in args.rows or [1_000_000]:
        with tempfile.TemporaryDirectory() as tmp:
            parquet = Path(tmp) / "train" / "part-00000.parquet"
            write_parquet(rows, parquet)
            base = _measure("floor", parquet, Path(tmp) / "floor", beam_args)
            ours = _measure("stage", parquet, Path(tmp) / "stage", beam_args)
        for result in (base, ours):
            print(
                f"{rows:>9,} rows  {result['kind']:<6} {result['seconds']:7.1f} s  "
                f"{rows / result['seconds']:>9,.0f} rows/s  peak RSS {result['peak_rss_gb']:.2f} GB"
            )
        print(f"{rows:>9,} rows  stage/floor = {ours['seconds'] / base['seconds']:.2f}x")


if __name__ == "__main__":
    main()
