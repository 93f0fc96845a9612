"""Transform stage speed and memory against a NumPy floor measured in the same run.

    python bench/transform_speed.py --rows 1000000 [--rows 2000000] [--dataset NAME] \\
        [--beam-arg=...]

For each size it makes a train split of synthetic rows of the dataset (its folder's
``synthetic.py``, split by the warehouse stage), then times in separate processes (so each has
its own peak RSS):

* ``floor``: the least any transform can do: read the Parquet, compute a full-pass statistic per
  column in NumPy (mean/std for numbers, a vocabulary for strings), apply it, encode tf.Examples
  with tfx_bsl's C++ encoder and write gzipped TFRecords (the same zlib level as the stage);
* ``stage``: ``pipeline.transform.run_transform`` on the train split: TFT analyze over the full
  definition + transform + write, on Beam's DirectRunner.

It prints seconds, rows/s, peak RSS and the ratio stage/floor, then the same as one JSON line.
Ratios, not absolute seconds, are the result: both sides run on the same machine in the same
minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def floor(parquet: Path, out_dir: Path) -> int:
    """Full-pass NumPy statistics, applied, encoded by tfx_bsl, written as gzipped TFRecords."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import tensorflow as tf
    from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

    from pipeline.tfrecord_io import COMPRESSION_LEVEL

    table = pq.read_table(sorted(Path(parquet).glob("*.parquet")))
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


def stage(dataset_name: str | None, split: Path, out_dir: Path, beam_args: list[str]) -> int:
    from pipeline.datasets import get_dataset
    from pipeline.transform import run_transform

    result = run_transform(get_dataset(dataset_name), {"train": split}, out_dir, beam_args)
    return result.rows["train"]


def peak_rss_bytes() -> int:
    """This process's own peak RSS: ``VmHWM`` on Linux, else ``ru_maxrss``.

    Linux carries ``ru_maxrss`` across ``execve`` from the mm the process had before it, and
    ``subprocess`` starts children with ``vfork``, i.e. in the parent's mm: a child of a parent
    that had built a 5M-row split in DuckDB reported the parent's 1.7 GB as its own peak.
    ``VmHWM`` belongs to the process's current address space only.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    kilobytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kilobytes * (1 if sys.platform == "darwin" else 1024)


def _child(kind: str, dataset: str | None, split: Path, out_dir: Path, beam_args: list) -> None:
    import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)

    started = time.perf_counter()
    measured = floor if kind == "floor" else lambda s, o: stage(dataset, s, o, beam_args)
    rows = measured(split, out_dir)
    seconds = time.perf_counter() - started
    peak_gb = peak_rss_bytes() / 1e9
    print(json.dumps({"kind": kind, "rows": rows, "seconds": seconds, "peak_rss_gb": peak_gb}))


def _measure(
    kind: str, dataset: str | None, split: Path, out_dir: Path, beam_args: list[str]
) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--split", str(split),
               "--out", str(out_dir), *[f"--beam-arg={a}" for a in beam_args]]  # fmt: skip
    if dataset:
        command += ["--dataset", dataset]
    completed = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append")
    parser.add_argument("--beam-arg", action="append", default=[])
    parser.add_argument("--dataset", help="a dataset with a synthetic.py (default: the default)")
    parser.add_argument("--child", choices=["floor", "stage"])
    parser.add_argument("--split", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    beam_args = ["--runner", "DirectRunner", *args.beam_arg]
    if args.child:
        _child(args.child, args.dataset, args.split, args.out, beam_args)
        return
    from synthetic_splits import synthetic_split

    for rows in args.rows or [1_000_000]:
        with tempfile.TemporaryDirectory() as tmp:
            split = synthetic_split(args.dataset, rows, Path(tmp) / "splits")
            base = _measure("floor", args.dataset, split, Path(tmp) / "floor", beam_args)
            ours = _measure("stage", args.dataset, split, Path(tmp) / "stage", beam_args)
        for result in (base, ours):
            print(
                f"{rows:>9,} rows  {result['kind']:<6} {result['seconds']:7.1f} s  "
                f"{rows / result['seconds']:>9,.0f} rows/s  peak RSS {result['peak_rss_gb']:.2f} GB"
            )
        ratio = ours["seconds"] / base["seconds"]
        print(f"{rows:>9,} rows  stage/floor = {ratio:.2f}x")
        print(json.dumps({
            "rows": rows, "floor_s": base["seconds"], "stage_s": ours["seconds"],
            "stage_vs_floor": round(ratio, 3), "floor_peak_rss_gb": base["peak_rss_gb"],
            "stage_peak_rss_gb": ours["peak_rss_gb"],
        }))  # fmt: skip


if __name__ == "__main__":
    main()
