"""Time the warehouse split on 1M and 5M synthetic rows (embedded DuckDB engine).

    .venv/bin/python bench/warehouse_split.py [--rows 1000000 5000000] [--dataset NAME]

Synthetic warehouses are built once per size and reused (their build time is reported when it
happens); each split run writes to a fresh directory that is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.data import build_synthetic_warehouse
from pipeline.datasets import get_dataset
from pipeline.warehouse import SplitConfig, run_split


def variants(dataset) -> dict[str, dict]:
    found = {"hash 80/10/10": {}}
    if str(dataset.label_kind) == "binary":
        found["stratified by label + oversample 0.5"] = {
            "stratify_by": dataset.label.name,
            "oversample_target": 0.5,
        }
    return found


def bench(dataset, rows: int, work_dir: Path) -> list[dict]:
    db = work_dir / f"synthetic-{dataset.name}-{rows}.duckdb"
    started = time.perf_counter()
    build_synthetic_warehouse(dataset, db, rows=rows, seed=0, start=date(2024, 1, 1), days=365)
    built = time.perf_counter() - started
    results = []
    for name, overrides in variants(dataset).items():
        out = work_dir / f"splits-{rows}"
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        result = run_split(SplitConfig(dataset, warehouse=db, **overrides), out)
        seconds = time.perf_counter() - started
        shutil.rmtree(out)
        results.append(
            {
                "rows": rows,
                "variant": name,
                "split_seconds": round(seconds, 2),
                "rows_per_second": round(rows / seconds),
                "split_rows": result.split_rows,
                "warehouse_build_seconds": round(built, 2),
            }
        )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000])
    parser.add_argument("--work-dir", type=Path, default=Path("data/bench"))
    parser.add_argument("--dataset", help="a dataset with a synthetic.py (default: the default)")
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    dataset = get_dataset(args.dataset)
    for rows in args.rows:
        for line in bench(dataset, rows, args.work_dir):
            print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
