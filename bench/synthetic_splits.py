"""Split files of synthetic rows for the benchmarks, made the way a run makes them.

A dataset folder's ``synthetic.py`` fills a warehouse file (``pipeline.data``), and the
warehouse stage's SQL writes the split files, the label included, so a benchmark times the
stages on exactly what they read in a run. Warehouses are cached per (dataset, rows, seed, start,
days) under ``data/bench``.
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CACHE = REPO / "data" / "bench"


def synthetic_split(
    dataset_name: str | None,
    rows: int,
    out_dir: Path,
    seed: int = 7,
    start: date = date(2024, 1, 1),
    days: int = 60,
) -> Path:
    """``out_dir/train``: all ``rows`` synthetic rows as one train split (ratios 1/0/0)."""
    from pipeline.data import build_synthetic_warehouse
    from pipeline.datasets import get_dataset
    from pipeline.warehouse import SplitConfig, run_split

    dataset = get_dataset(dataset_name)
    CACHE.mkdir(parents=True, exist_ok=True)
    db = CACHE / f"{dataset.name}-{rows}-{seed}-{start:%Y%m%d}-{days}.duckdb"
    build_synthetic_warehouse(dataset, db, rows=rows, seed=seed, start=start, days=days)
    config = SplitConfig(dataset, warehouse=db, ratios=(1.0, 0.0, 0.0))
    result = run_split(config, out_dir, overwrite=True)
    return Path(result.split_dirs["train"])
