"""Incremental analysis: a run with one new span, with TFT's analyzer cache versus without.

    python bench/incremental_analysis.py [--span-rows 300000] [--spans 3]

Writes ``--spans`` daily spans of synthetic rows, warms the cache with an analysis of all
but the last span, then analyzes all spans twice: reusing the cache (only the new span is read)
and from scratch. Both produce the same transform; the script checks that and prints the times.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_spans(root: Path, spans: int, rows: int, dataset: str | None) -> dict[str, Path]:
    """One span per day of synthetic rows, each split by the warehouse stage."""
    from synthetic_splits import synthetic_split

    result = {}
    for index in range(spans):
        day = date(2024, 1, 1) + timedelta(days=index)
        name = f"span-{day:%Y%m%d}"
        result[name] = synthetic_split(
            dataset, rows, root / name, seed=100 + index, start=day, days=1
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--span-rows", type=int, default=300_000)
    parser.add_argument("--spans", type=int, default=3)
    parser.add_argument("--dataset", help="a dataset with a synthetic.py (default: the default)")
    args = parser.parse_args()

    import pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)
    from pipeline.datasets import get_dataset
    from pipeline.transform import run_transform

    dataset = get_dataset(args.dataset)
    beam_args = ["--runner", "DirectRunner"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spans = write_spans(root, args.spans, args.span_rows, args.dataset)
        names = list(spans)
        newest = {"train": spans[names[-1]]}  # transform only the new span: analysis is the point
        cache = root / "cache"
        old = {name: spans[name] for name in names[:-1]}
        run_transform(dataset, {"train": spans[names[0]]}, root / "warm", beam_args, old, cache)

        started = time.perf_counter()
        cached = run_transform(dataset, newest, root / "cached", beam_args, spans, cache)
        with_cache = time.perf_counter() - started
        started = time.perf_counter()
        scratch = run_transform(dataset, newest, root / "scratch", beam_args, spans)
        without = time.perf_counter() - started

        same = all(
            (Path(cached.output_dir) / part / p.name).read_bytes() == p.read_bytes()
            for part in ("examples", "transform_fn/assets")
            for p in (Path(scratch.output_dir) / part).iterdir()
        )
        print(f"spans: {len(names)} x {args.span_rows:,} rows; new span: {names[-1]}")
        print(f"with cache:    {with_cache:6.1f} s  read {cached.analysis['read']}, "
              f"cached {cached.analysis['from_cache']}")  # fmt: skip
        print(f"without cache: {without:6.1f} s  read {scratch.analysis['read']}")
        print(f"speedup {without / with_cache:.2f}x; identical examples and vocabularies: {same}")


if __name__ == "__main__":
    main()
