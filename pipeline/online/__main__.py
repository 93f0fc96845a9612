"""``python -m pipeline.online``: the streaming job, event export, lookups and the parity replay.

    python -m pipeline.online export-events --dataset flights --output events.jsonl \\
        [--db FILE] [--start UNIX --end UNIX]
    python -m pipeline.online ingest --dataset flights --store sqlite:online.sqlite \\
        --events 'events*.jsonl' [--dead-letter bad.jsonl] [--keep-history] [Beam flags]
    python -m pipeline.online stream --dataset flights --store redis://10.0.0.3:6379 \\
        --subscription projects/P/subscriptions/S [--dead-letter-topic projects/P/topics/T] \\
        --runner DataflowRunner --project P --region R --temp_location gs://B/tmp ...
    python -m pipeline.online lookup --dataset flights --store sqlite:online.sqlite \\
        --row '{"origin": "JFK", "carrier": "B6", "tailnum": "N123", "time_hour": 1357063200}'
    python -m pipeline.online replay --dataset flights --split-dir runs/LATEST/splits/eval \\
        [--export-dir DIR] [--days N] [--store URI]

Exit status: 0 ok; 2 usage; 3 a verdict (rejected events, a parity mismatch). Flags this command
does not know go to Beam's PipelineOptions.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.cli import UsageError, add_dataset_argument, dataset_from_args, exit_on_usage_error
from pipeline.verdicts import EXIT_VERDICT


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.online",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export-events", help="warehouse event tables -> JSON lines")
    ingest = commands.add_parser("ingest", help="event files -> the store (DirectRunner)")
    stream = commands.add_parser("stream", help="Pub/Sub -> the store (streaming)")
    lookup = commands.add_parser("lookup", help="a request row -> its derived columns")
    replay = commands.add_parser("replay", help="parity of the streaming path with the SQL")
    for sub in (export, ingest, stream, lookup, replay):
        add_dataset_argument(sub)
    for sub in (export, replay):
        sub.add_argument("--db", type=Path, help="warehouse file (default: the dataset's)")
        sub.add_argument("--data-dir", type=Path, default=Path("data"))
    export.add_argument("--output", type=Path, required=True)
    export.add_argument("--start", type=int, help="first event time, Unix seconds")
    export.add_argument("--end", type=int, help="last event time, Unix seconds")
    for sub in (ingest, stream, lookup):
        sub.add_argument("--store", required=True, help="sqlite:PATH or redis://host:port[/db]")
    replay.add_argument("--store", help="default: a fresh SQLite file in a temporary directory")
    ingest.add_argument("--events", action="append", required=True, help="file pattern")
    ingest.add_argument("--dead-letter", help="write rejected events here (JSON lines)")
    ingest.add_argument(
        "--keep-history", action="store_true", help="evict nothing (to query past times)"
    )
    stream.add_argument("--subscription", required=True, help="projects/P/subscriptions/S")
    stream.add_argument("--dead-letter-topic", help="projects/P/topics/T for rejected events")
    lookup.add_argument("--row", required=True, help="a JSON object of client columns")
    replay.add_argument("--split-dir", required=True)
    replay.add_argument("--export-dir", help="also compare end-to-end predictions")
    replay.add_argument("--days", type=int, help="only the split's last N days (default: all)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, beam_args = _parser().parse_known_args(argv)
    with exit_on_usage_error():
        definition = dataset_from_args(args)
        if not definition.has_derived_columns:
            raise UsageError(f"dataset {definition.name!r} declares no window features or joins")
    if args.command == "export-events":
        count = _export(definition, args)
        print(json.dumps({"events": count, "output": str(args.output)}))
        return 0
    if args.command == "ingest":
        from pipeline.online.jobs import run_files

        result = run_files(
            definition, args.store, args.events, beam_args, args.dead_letter, args.keep_history
        )
        print(json.dumps(result.__dict__))
        return EXIT_VERDICT if result.invalid_events else 0
    if args.command == "stream":
        from pipeline.online.jobs import run_pubsub

        run_pubsub(definition, args.store, args.subscription, args.dead_letter_topic, beam_args)
        return 0
    if args.command == "lookup":
        from pipeline.online.enrich import Enricher
        from pipeline.online.stores import open_store

        store = open_store(args.store)
        (row,) = Enricher(definition, store).enrich([json.loads(args.row)])
        store.close()
        print(json.dumps(row, indent=2))
        return 0
    from pipeline.online.replay import replay

    report = replay(
        definition,
        _warehouse(definition, args),
        args.split_dir,
        store_uri=args.store,
        days=args.days,
        export_dir=args.export_dir,
        beam_args=beam_args,
    )
    print(json.dumps(report.to_manifest(), indent=2))
    return 0 if report.passed else EXIT_VERDICT


def _warehouse(definition, args) -> Path:
    if args.db is not None:
        return args.db
    from pipeline.data import warehouse_path

    return warehouse_path(definition, args.data_dir)


def _export(definition, args) -> int:
    from pipeline.online.jobs import export_events

    return export_events(
        definition, _warehouse(definition, args), args.output, args.start, args.end
    )


if __name__ == "__main__":
    sys.exit(main())
