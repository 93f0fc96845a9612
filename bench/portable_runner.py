"""Beam stages on the portable runner against the DirectRunner, measured in the same run.

    python bench/portable_runner.py --rows 100000 [--dataset NAME] [--workers 2] [--repeat 1]

Makes a train split of synthetic rows (``bench/synthetic_splits.py``), then times, each in a
fresh process, the train split's TFDV statistics plus the TFT transform stage (analyze +
transform + write):

* ``direct``: Beam's DirectRunner in the process (the default mode);
* ``portable``: ``PortableRunner`` on a :class:`pipeline.runners.PortableCluster` with
  ``--workers`` EXTERNAL SDK workers per job and as many preloaded spare worker processes;
* ``portable-cold``: the same without spares (each worker starts and imports TensorFlow when its
  job asks for it, as Beam's stock worker pool does).

The cluster's start (job server, worker pool, probe) is timed apart from the jobs: a run pays it
once. It prints seconds per mode and the ratios against ``direct``; the modes alternate when
``--repeat`` > 1, so that load from other processes hits each of them alike.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODES = ("direct", "portable", "portable-cold")


def _jobs(dataset_name: str | None, split: Path, out_dir: Path, beam_args: list[str]) -> int:
    from pipeline.datasets import get_dataset
    from pipeline.transform import run_transform
    from pipeline.validation.stats import compute_statistics

    dataset = get_dataset(dataset_name)
    pattern = f"{split}/*.parquet"
    compute_statistics(pattern, out_dir / "train.pb", beam_args, exclude=(dataset.label.name,))
    result = run_transform(dataset, {"train": split}, out_dir / "t", beam_args)
    return result.rows["train"]


def _child(mode: str, dataset: str | None, split: Path, out_dir: Path, workers: int) -> None:
    import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
    from pipeline.runners import PortableCluster

    started = time.perf_counter()
    if mode == "direct":
        cluster_seconds = 0.0
        rows = _jobs(dataset, split, out_dir, ["--runner=DirectRunner"])
    else:
        spares = workers if mode == "portable" else 0
        with PortableCluster(workers=workers, spare_workers=spares) as cluster:
            cluster_seconds = time.perf_counter() - started
            rows = _jobs(dataset, split, out_dir, cluster.beam_args())
    seconds = time.perf_counter() - started - cluster_seconds
    print(json.dumps({"mode": mode, "rows": rows, "seconds": seconds, "start": cluster_seconds}))


def _measure(mode: str, dataset: str | None, split: Path, out_dir: Path, workers: int) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--split", str(split),
               "--out", str(out_dir), "--workers", str(workers)]  # fmt: skip
    if dataset:
        command += ["--dataset", dataset]
    completed = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--dataset", help="a dataset with a synthetic.py (default: the default)")
    parser.add_argument("--child", choices=MODES)
    parser.add_argument("--split", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.dataset, args.split, args.out, args.workers)
        return
    from synthetic_splits import synthetic_split

    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    starts: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        split = synthetic_split(args.dataset, args.rows, Path(tmp) / "splits")
        for round_ in range(args.repeat):
            for mode in MODES:
                out = Path(tmp) / f"{mode}-{round_}"
                result = _measure(mode, args.dataset, split, out, args.workers)
                seconds[mode].append(result["seconds"])
                if mode == "portable":
                    starts.append(result["start"])
                print(f"{args.rows:>9,} rows  {mode:<14} {result['seconds']:7.1f} s", flush=True)
    best = {mode: min(values) for mode, values in seconds.items()}
    print(f"cluster start (job server + pool + probe): {min(starts):.1f} s, once per run")
    for mode in MODES[1:]:
        print(f"{args.rows:>9,} rows  {mode}/direct = {best[mode] / best['direct']:.2f}x")


if __name__ == "__main__":
    main()
