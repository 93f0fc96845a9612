"""``python -m pipeline.data``: fetch a dataset's source into the warehouse, or generate one.

    python -m pipeline.data prepare [--dataset NAME | --all] [--data-dir data]
    python -m pipeline.data synthetic [--dataset NAME] --rows N [--seed S] --db FILE \\
        [--start 2024-01-01 --days 365]

Prints what was built as JSON. Exit status 2 for a usage error (e.g. an unknown dataset), 3 for
a verdict on the source (a file without the declared columns, rejected rows, a wrong row count:
reloading the same file ends the same way).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from pipeline.cli import add_dataset_argument, dataset_from_args, exit_on_usage_error
from pipeline.data import build_synthetic_warehouse, ensure_warehouse
from pipeline.data.load import read_sidecar
from pipeline.datasets import registry
from pipeline.verdicts import EXIT_VERDICT, Verdict


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="fetch the source, build the warehouse")
    add_dataset_argument(prepare)
    prepare.add_argument(
        "--all", action="store_true", help="every dataset folder that declares a source"
    )
    prepare.add_argument("--data-dir", type=Path, default=Path("data"))
    synth = commands.add_parser("synthetic", help="build a warehouse of generated rows")
    add_dataset_argument(synth)
    synth.add_argument("--rows", type=int, required=True)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--db", type=Path, required=True)
    synth.add_argument("--start", type=date.fromisoformat, default=date(2024, 1, 1))
    synth.add_argument("--days", type=int, default=365)
    return parser


def _prepare_all(data_dir: Path) -> int:
    """One warehouse per dataset folder (variants of a folder share theirs)."""
    done: set[str] = set()
    for definition in registry().values():
        folder = str(definition.folder)
        if definition.source is None or folder in done:
            continue
        done.add(folder)
        db_path = ensure_warehouse(definition, data_dir)
        print(json.dumps({"dataset": definition.name, "warehouse": str(db_path)}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except Verdict as verdict:
        print(f"verdict: {verdict}", file=sys.stderr)
        return EXIT_VERDICT


def _run(args: argparse.Namespace) -> int:
    if args.command == "prepare" and args.all:
        return _prepare_all(args.data_dir)
    with exit_on_usage_error():
        definition = dataset_from_args(args)
    if args.command == "prepare":
        db_path = ensure_warehouse(definition, args.data_dir)
    else:
        db_path = build_synthetic_warehouse(
            definition, args.db, args.rows, args.seed, args.start, args.days
        )
    info = read_sidecar(db_path) or {}
    print(
        json.dumps({"dataset": definition.name, "warehouse": str(db_path), **info}, sort_keys=True)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
