"""Batch scoring throughput against the model's own, measured in the same run.

    python bench/batch_scoring.py --model runs/LATEST/serving/<model>/<version> --rows 1000000
        [--dataset NAME] [--portable] [--batch-size 8192]

Builds a synthetic warehouse of ``--rows`` rows (``pipeline.data synthetic``), then times, each in
a fresh process:

* ``floor``: the least scoring can do: read the same rows from Parquet, encode them with tfx_bsl's
  C++ encoder and call ``serving_default`` batch by batch in one process, writing nothing;
* ``score``: ``pipeline.score`` on the warehouse file: the score query, the Beam job on the
  DirectRunner, the atomic publish of the prediction table into the warehouse;
* ``score-portable`` (with ``--portable``): the same on a portable cluster of two SDK workers
  (its start included).

It prints seconds, rows/s and each ratio to the floor.
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


def floor(dataset_name: str | None, db: Path, model: str, batch_size: int) -> int:
    """Rows of the warehouse through serving_default in batches, in this process."""
    import duckdb
    import tensorflow as tf
    from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder

    from pipeline.arrow_io import list_batch_schema, to_list_batch
    from pipeline.datasets import get_dataset

    dataset = get_dataset(dataset_name)
    names = tuple(c.name for c in dataset.serving_columns)
    schema = list_batch_schema(dataset, names)
    stamps = {c.name for c in dataset.columns if c.type.value == "TIMESTAMP"}
    with duckdb.connect(str(db), read_only=True) as connection:
        columns = ", ".join(f"epoch({n})::BIGINT AS {n}" if n in stamps else n for n in names)
        table = connection.execute(f"SELECT {columns} FROM {dataset.table}").fetch_arrow_table()
    from pipeline.score.model import resolve_model

    serve = tf.saved_model.load(resolve_model(model).export_dir).signatures["serving_default"]
    encoder = RecordBatchToExamplesEncoder()
    started = time.perf_counter()
    for batch in table.to_batches(max_chunksize=batch_size):
        examples = encoder.encode(to_list_batch(batch, schema))
        serve(examples=tf.constant(examples))
    _report("floor", table.num_rows, time.perf_counter() - started)
    return table.num_rows


def score(dataset_name: str | None, db: Path, model: str, batch_size: int, portable: bool) -> None:
    from pipeline.datasets import get_dataset
    from pipeline.score.__main__ import main

    runner = ["--beam-runner", "portable"] if portable else ["--runner=DirectRunner"]
    dataset = ["--dataset", dataset_name] if dataset_name else []
    started = time.perf_counter()
    command = ["--model", model, "--db", str(db), "--batch-size", str(batch_size), *runner]
    code = main([*dataset, *command])
    assert code == 0
    import duckdb

    with duckdb.connect(str(db), read_only=True) as connection:
        table = f"{get_dataset(dataset_name).table}_predictions"
        (rows,) = connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
    _report("score-portable" if portable else "score", rows, time.perf_counter() - started)


def _report(kind: str, rows: int, seconds: float) -> None:
    print(json.dumps({"kind": kind, "rows": rows, "seconds": seconds}))


def _measure(kind: str, db: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--db", str(db), "--model", args.model,
               "--batch-size", str(args.batch_size)]  # fmt: skip
    if args.dataset:
        command += ["--dataset", args.dataset]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if completed.returncode:
        raise SystemExit(completed.stderr[-3000:])
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="an export directory or model base")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--portable", action="store_true")
    parser.add_argument("--dataset", help="a dataset with a synthetic.py (default: the default)")
    parser.add_argument("--child", choices=["floor", "score", "score-portable"])
    parser.add_argument("--db", type=Path)
    args = parser.parse_args()
    if args.child == "floor":
        floor(args.dataset, args.db, args.model, args.batch_size)
        return
    if args.child:
        score(args.dataset, args.db, args.model, args.batch_size, args.child == "score-portable")
        return
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "synthetic.duckdb"
        dataset = ["--dataset", args.dataset] if args.dataset else []
        subprocess.run(
            [sys.executable, "-m", "pipeline.data", "synthetic", "--rows", str(args.rows),
             "--seed", "7", "--db", str(db), *dataset],
            check=True, cwd=REPO, capture_output=True,
        )  # fmt: skip
        kinds = ["floor", "score", *(["score-portable"] if args.portable else [])]
        results = {kind: _measure(kind, db, args) for kind in kinds}
    base = results["floor"]["seconds"]
    for kind, result in results.items():
        rate = result["rows"] / result["seconds"]
        print(
            f"{result['rows']:>9,} rows  {kind:<15} {result['seconds']:7.1f} s  "
            f"{rate:>9,.0f} rows/s  {result['seconds'] / base:5.2f}x floor"
        )


if __name__ == "__main__":
    main()
