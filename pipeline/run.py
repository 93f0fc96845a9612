"""Run the whole pipeline end to end in one process tree.

    python -m pipeline.run --runner DirectRunner [flags] [Beam pipeline options]
    python -m pipeline.run --run-id ID --stages transform,train ...   (one step of a run)
    python -m pipeline.run --beam-runner portable [--beam-workers 2]  (Beam stages on the Fn API)

Stages (see :mod:`pipeline.stages`): data (embedded warehouse) -> warehouse split -> validation
-> transform -> train -> export -> parity -> evaluate (model report, blessing) -> predict (fresh
process) -> push. Every run gets its own
directory under ``--runs-dir`` with a ``manifest.json`` (status, stage timings, rows per split,
anomalies, metrics, artifact paths and digests, versions of the stack), rewritten after every
stage. With ``--stages`` only those stages run, in the run directory of ``--run-id``, reusing
what earlier stages left there; rerunning a stage replaces its artifacts atomically. Flags this
module does not know are passed to Beam's ``PipelineOptions``; ``--beam-runner portable`` runs the
Beam stages on ``PortableRunner`` with a local job server and SDK worker pool started for the run
(:mod:`pipeline.runners`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline import console, storage
from pipeline.cli import EXIT_USAGE, UsageError, add_dataset_argument, dataset_from_args
from pipeline.definition import DatasetDefinition, DefinitionError, DuplicatePolicy
from pipeline.manifest import MANIFEST, RunRecorder, stack_versions, summary
from pipeline.runners import add_runner_arguments, beam_session, runner_flag_conflict
from pipeline.stages import BEAM_STAGES, EARLY_STARTS, STAGES, WARM_STARTS, RunContext
from pipeline.verdicts import EXIT_VERDICT, Verdict

# Exit statuses: 0 done; EXIT_VERDICT (3) when the run stopped on its own verdict (a blocking
# anomaly, an empty table or a missing column, no training rows, a parity gap, a missing input: a
# retry would end the same way); EXIT_USAGE (2) for a bad command line, before anything is
# written; 1 for anything else (a crash, a lost worker: worth a retry).
# A Beam job finished and wrote its outputs, but a runner process then died abnormally: the stage
# did not publish them (see pipeline.runners.portable). Neither a verdict on the data nor a crash
# to retry blindly: look at the process's log first.
EXIT_RUNNER_ABORTED = 4
LATEST_LINK = "LATEST"
log = logging.getLogger("pipeline.run")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description="Run the pipeline end to end.",
        epilog="Unknown flags (e.g. --runner DirectRunner --direct_num_workers 2) go to Beam.",
    )
    add_dataset_argument(parser)
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument(
        "--db", type=Path, help="warehouse DuckDB file (default: the dataset's, in --data-dir)"
    )
    parser.add_argument(
        "--runs-dir", default="runs", help="parent of the run directories: a path or gs:// URI"
    )
    parser.add_argument("--run-id", help="default: UTC time of the start")
    parser.add_argument(
        "--stages",
        help="comma-separated stages to run in an existing or new run directory (default: all, "
        f"in a new one): {','.join(STAGES)}",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="start this run id afresh: delete whatever an earlier attempt left in its directory "
        "(a scheduler's retry or rerun of an interval)",
    )
    parser.add_argument("--model-name", help="served model name (default: the dataset's)")
    parser.add_argument("--train-steps", type=_positive, default=1000)
    parser.add_argument("--parity-rows", type=_positive, default=200)
    parser.add_argument("--predict-rows", type=_positive, default=3)
    parser.add_argument(
        "--parity-replay-days",
        type=int,
        default=14,
        help="window features and joins: replay the eval split's last N days of events through "
        "the streaming job and the online store (0: the whole split)",
    )
    parser.add_argument(
        "--online-store", help="store of that replay: sqlite:PATH or redis://host:port[/db]"
    )
    parser.add_argument(
        "--models-dir", default="models", help="parent of the model bases (path or gs:// URI)"
    )
    parser.add_argument(
        "--push-base",
        help="model base (path or gs:// URI) that blessed exports are pushed to "
        "(default: <models-dir>/<model name>)",
    )
    parser.add_argument(
        "--metric-floor",
        type=float,
        help="bless only if the eval blessing metric (auc, macro_f1, rmse: by label kind) beats "
        "this (default: the run's majority-class or mean baseline)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.01,
        help="bless only if the eval metric is at most this much worse than the served version's",
    )
    parser.add_argument(
        "--slice-tolerance",
        type=float,
        default=0.05,
        help="bless only if no declared slice (with its minimum rows) is worse than the served "
        "version on the same eval rows by more than this, in the blessing metric's units",
    )
    parser.add_argument(
        "--no-slice-gate",
        dest="slice_gate",
        action="store_false",
        help="report the slices but do not let them refuse the blessing",
    )
    parser.add_argument(
        "--duplicates",
        choices=[str(p) for p in DuplicatePolicy],
        help="exact duplicate rows in the table: keep, drop or block (default: the dataset's)",
    )
    parser.add_argument("--start", help="first day of the data interval (YYYY-MM-DD), inclusive")
    parser.add_argument("--end", help="end of the data interval (YYYY-MM-DD), exclusive")
    warehouse = parser.add_argument_group(
        "warehouse", "where the warehouse SQL runs: the embedded DuckDB file or BigQuery"
    )
    warehouse.add_argument("--warehouse-engine", choices=("duckdb", "bigquery"), default="duckdb")
    warehouse.add_argument("--table", help="source dataset.table (default: the definition's)")
    warehouse.add_argument(
        "--sample-fraction",
        type=float,
        default=1.0,
        help="keep this deterministic hash sample of the rows (counted as filter 'sample')",
    )
    warehouse.add_argument("--bq-project", help="bigquery: project that runs the jobs")
    warehouse.add_argument("--bq-dataset", help="bigquery: dataset receiving the split tables")
    warehouse.add_argument("--bq-location", default="US", help="bigquery: job location")
    warehouse.add_argument(
        "--bq-label", action="append", default=[], metavar="KEY=VALUE", help="bigquery job label"
    )
    console.add_arguments(parser)  # --verbose, --json
    add_runner_arguments(parser)
    args, beam_args = parser.parse_known_args(argv)
    if problem := runner_flag_conflict(args, beam_args):
        parser.error(problem)
    return args, beam_args


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def bigquery_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """BigQueryOptions fields for ``--warehouse-engine bigquery`` (None for DuckDB).

    The split tables are named after the run (``split_<run id>_train``, ...), so daily runs
    never overwrite each other's tables; a rerun of the same interval replaces its own.
    """
    if args.warehouse_engine != "bigquery":
        return None
    if not (args.bq_project and args.bq_dataset):
        raise UsageError("--warehouse-engine bigquery needs --bq-project and --bq-dataset")
    labels = dict(label.split("=", 1) for label in args.bq_label if "=" in label)
    labels.setdefault("pipeline", re.sub(r"[^a-z0-9_-]", "_", args.dataset.lower())[:63])
    labels.setdefault("run", re.sub(r"[^a-z0-9_-]", "_", args.run_id.lower())[:63])
    return {
        "project": args.bq_project,
        "destination_dataset": args.bq_dataset,
        "location": args.bq_location,
        "destination_prefix": "split_" + re.sub(r"\W", "_", args.run_id),
        "labels": tuple(sorted(labels.items())),
    }


def _selected_stages(spec: str | None) -> list[str]:
    if not spec:
        return list(STAGES)
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in STAGES]
    if unknown:
        raise UsageError(f"unknown stage(s) {unknown}; known: {', '.join(STAGES)}")
    return names


def _open_recorder(args: argparse.Namespace, beam_args: list[str], partial: bool) -> RunRecorder:
    """A new run directory, or (for ``--stages``) the existing one's manifest to continue."""
    run_dir = storage.join(args.runs_dir, args.run_id)
    manifest_path = storage.join(run_dir, MANIFEST)
    if args.restart and storage.exists(run_dir):
        _discard_run_dir(run_dir)
    if storage.isfile(manifest_path) and not partial:
        raise UsageError(f"run directory {run_dir} already holds a run; pick another --run-id")
    if storage.isfile(manifest_path):
        return RunRecorder(run_dir, json.loads(storage.read_text(manifest_path)))
    storage.makedirs(run_dir)
    return RunRecorder(
        run_dir,
        {
            "run_id": args.run_id,
            "dataset": args.dataset,
            "label": args.label_description,
            "display_columns": list(args.display_columns),
            "run_dir": str(run_dir),
            "started_at": dt.datetime.now(dt.UTC).isoformat(),
            "arguments": {k: str(v) for k, v in vars(args).items()},
            "beam_args": beam_args,
            "versions": stack_versions(),
            "stages": {},
        },
    )


def _discard_run_dir(run_dir: str) -> None:
    """Remove an earlier attempt's run directory (locally: renamed away first, then deleted)."""
    log.info("restart: removing the earlier attempt in %s", run_dir)
    if storage.is_remote(run_dir):
        storage.rmtree(run_dir)
        return
    aside = storage.join(
        storage.parent(run_dir), f".{storage.basename(run_dir)}.replaced-{os.getpid()}"
    )
    os.rename(run_dir, aside)
    storage.rmtree(aside)


def check_usage(args: argparse.Namespace) -> tuple[DatasetDefinition, list[str], Any]:
    """Everything the command line decides, checked before anything is written: the dataset,
    the stages, the BigQuery flags (:class:`UsageError` otherwise)."""
    dataset = dataset_from_args(args)
    args.dataset = dataset.name
    args.label_description = dataset.label.describe()
    args.display_columns = dataset.summary_columns
    args.run_id = args.run_id or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.run_id):
        raise UsageError(f"invalid --run-id {args.run_id!r} (letters, digits, . _ -)")
    return dataset, _selected_stages(args.stages), bigquery_options(args)


def run(args: argparse.Namespace, beam_args: list[str]) -> dict[str, Any]:
    """Run the selected stages; return the manifest. Raises when a stage stops the run."""
    dataset, selected, bigquery = check_usage(args)
    recorder = _open_recorder(args, beam_args, partial=bool(args.stages))
    manifest = recorder.manifest
    ctx = RunContext(
        dataset=dataset,
        run_dir=recorder.run_dir,
        manifest=manifest,
        beam_args=beam_args,
        data_dir=args.data_dir,
        db=args.db,
        model_name=args.model_name,
        train_steps=args.train_steps,
        parity_rows=args.parity_rows,
        parity_replay_days=args.parity_replay_days or None,
        online_store=args.online_store,
        predict_rows=args.predict_rows,
        start=args.start,
        end=args.end,
        push_base=args.push_base,
        models_dir=args.models_dir,
        metric_floor=args.metric_floor,
        tolerance=args.tolerance,
        slice_gate=args.slice_gate,
        slice_tolerance=args.slice_tolerance,
        warehouse_engine=args.warehouse_engine,
        bigquery=bigquery,
        source_table=args.table,
        duplicates=args.duplicates,
        sample_fraction=args.sample_fraction,
    )
    manifest.pop("error", None)
    manifest.pop("traceback", None)
    try:
        with _beam_session(args, beam_args, selected) as stage_beam_args:
            ctx.beam_args = stage_beam_args
            _prewarm(ctx, selected)
            for index, name in enumerate(selected):
                with recorder.stage(name) as record, console.stage(name, ctx):
                    STAGES[name](ctx, record)
                _start_early(ctx, name, selected[index + 1 :])
        done = all(manifest["stages"].get(n, {}).get("status") == "succeeded" for n in STAGES)
        manifest["status"] = "succeeded" if done else "in_progress"
    except BaseException as error:
        manifest["status"] = "failed"
        manifest["error"] = f"{type(error).__name__}: {error}"
        manifest["traceback"] = traceback.format_exc(limit=8)
        raise
    finally:
        _stop_started(ctx)
        manifest["finished_at"] = dt.datetime.now(dt.UTC).isoformat()
        recorder.save()
    if manifest["status"] == "succeeded":
        _point_latest(args.runs_dir, args.run_id)
    return manifest


def _start_early(ctx: RunContext, finished: str, later: list[str]) -> None:
    """Start the processes of later stages that need only ``finished`` (see EARLY_STARTS)."""
    for name in later:
        after, start = EARLY_STARTS.get(name, (None, None))
        if after == finished and (started := start(ctx)) is not None:
            ctx.started[name] = started


def _prewarm(ctx: RunContext, selected: list[str]) -> None:
    """Start warm the processes of the early starts this run will make (see WARM_STARTS): the
    stage and the one it starts after are both selected."""
    for name, warm in WARM_STARTS.items():
        after = EARLY_STARTS[name][0]
        due = name in selected and after in selected[: selected.index(name)]
        if due and (process := warm(ctx)) is not None:
            ctx.warm[name] = process


def _stop_started(ctx: RunContext) -> None:
    """Kill early-started processes whose stage never ran (the run stopped before it), and warm
    ones never given work."""
    for started in [*ctx.started.values(), *ctx.warm.values()]:
        started.kill()
    ctx.started.clear()
    ctx.warm.clear()


@contextlib.contextmanager
def _beam_session(
    args: argparse.Namespace, beam_args: list[str], selected: list[str]
) -> Iterator[list[str]]:
    """The stages' Beam flags; a portable cluster starts only when a Beam stage is selected."""
    if not BEAM_STAGES.intersection(selected):
        yield beam_args
        return
    with beam_session(args, beam_args) as stage_beam_args:
        yield stage_beam_args


def _point_latest(runs_dir: str, run_id: str) -> None:
    """Atomically repoint ``runs/LATEST`` at the newest succeeded run.

    Locally a symlink; in an object store a small object holding the run id.
    """
    if storage.is_remote(runs_dir):
        storage.write_text_atomic(storage.join(runs_dir, LATEST_LINK), run_id + "\n")
        return
    runs_dir = Path(runs_dir)
    tmp = runs_dir / f".{LATEST_LINK}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(run_id)
    os.replace(tmp, runs_dir / LATEST_LINK)


def is_verdict(error: BaseException) -> bool:
    """True when the run stopped on purpose (see :data:`EXIT_VERDICT`), not by a crash.

    A worker environment that cannot host the pipeline (its Python lacks apache_beam or this
    project) is a setup error like a bad flag: a retry would end the same way.
    """
    from pipeline.runners import WorkerEnvironmentError

    return isinstance(error, Verdict | WorkerEnvironmentError)


def exit_status(error: BaseException) -> int:
    """The exit status of a run that raised ``error``."""
    from pipeline.runners import RunnerAborted

    if isinstance(error, RunnerAborted):
        return EXIT_RUNNER_ABORTED
    return EXIT_VERDICT if is_verdict(error) else 1


def _quiet_logs() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("apache_beam", "absl", "tensorflow", "tensorflow_transform", "root"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    _quiet_logs()
    args, beam_args = parse_args(argv)
    console.start(verbose=args.verbose)  # before anything imports TensorFlow
    try:
        manifest = run(args, beam_args)
    except (UsageError, DefinitionError) as error:  # before anything was written
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as error:  # the summary and manifest carry the details
        manifest_path = storage.join(args.runs_dir, args.run_id or "", MANIFEST)
        print(f"\nRUN FAILED: {type(error).__name__}: {error}", file=sys.stderr)
        with contextlib.suppress(Exception):  # a crash may have left no readable manifest
            if storage.isfile(manifest_path):
                failed = json.loads(storage.read_text(manifest_path))
                print(summary(failed), file=sys.stderr)
                if args.json:
                    print(json.dumps(console.json_summary(failed), indent=2))
        return exit_status(error)
    if args.json:
        print(json.dumps(console.json_summary(manifest), indent=2))
    else:
        print("\n" + summary(manifest))
    return 0


# TensorFlow and TFT build graphs while iterating sets of feature names, whose order follows
# Python's per-process string hash seed: the export's node names (``zeros``, ``zeros_2``...) went
# to different features from one run to the next. One fixed seed for the run's processes makes
# the same inputs give the same bytes.
HASH_SEED = "0"


def ensure_hash_seed() -> None:
    """Re-execute this command with ``PYTHONHASHSEED`` fixed unless it already is."""
    if os.environ.get("PYTHONHASHSEED") != HASH_SEED:
        env = {**os.environ, "PYTHONHASHSEED": HASH_SEED}
        os.execve(sys.executable, [sys.executable, "-m", "pipeline.run", *sys.argv[1:]], env)


if __name__ == "__main__":
    ensure_hash_seed()
    sys.exit(main())
