"""Run the whole pipeline end to end in one process tree.

    python -m pipeline.run --runner DirectRunner [flags] [Beam pipeline options]
    python -m pipeline.run --run-id ID --stages transform,train ...   (one step of a run)
    python -m pipeline.run --beam-runner portable [--beam-workers 2]  (Beam stages on the Fn API)

Stages (see :mod:`pipeline.stages`): data (embedded warehouse) -> warehouse split -> validation
-> transform -> train -> export -> parity -> predict (fresh process). Every run gets its own
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
import platform
import re
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline import storage
from pipeline.datasets import get_dataset
from pipeline.runners import add_runner_arguments, beam_session, runner_flag_conflict
from pipeline.stages import BEAM_STAGES, STAGES, RunContext, StageFailed

MANIFEST = "manifest.json"
# Exit statuses: 0 done; EXIT_VERDICT when the run stopped on its own verdict (a blocking anomaly,
# no training rows, a parity gap, a missing input or a bad command line: a retry would end the
# same way); 1 for anything else (a crash, a lost worker: worth a retry).
EXIT_VERDICT = 3
# A Beam job finished and wrote its outputs, but a runner process then died abnormally: the stage
# did not publish them (see pipeline.runners.portable). Neither a verdict on the data nor a crash
# to retry blindly: look at the process's log first.
EXIT_RUNNER_ABORTED = 4
LATEST_LINK = "LATEST"
log = logging.getLogger("pipeline.run")


class RunRecorder:
    """Keeps the run manifest and writes it after every stage, so a crash still leaves a record."""

    def __init__(self, run_dir: str, manifest: dict[str, Any]):
        self.run_dir = run_dir
        self.manifest: dict[str, Any] = {**manifest, "status": "running"}
        self.save()

    def save(self) -> None:
        storage.write_json_atomic(storage.join(self.run_dir, MANIFEST), self.manifest)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        record: dict[str, Any] = {"status": "running"}
        # A rerun of a stage replaces its record; later stages' records stay until they rerun.
        self.manifest["stages"][name] = record
        started = time.perf_counter()
        log.info("stage %s: started", name)
        try:
            yield record
        except BaseException as error:
            record.update(status="failed", error=f"{type(error).__name__}: {error}")
            raise
        finally:
            record["seconds"] = round(time.perf_counter() - started, 3)
            if record["status"] == "running":
                record["status"] = "succeeded"
            log.info("stage %s: %s in %.1f s", name, record["status"], record["seconds"])
            self.save()


def stack_versions() -> dict[str, str]:
    """Versions of the libraries that shape the artifacts."""
    from importlib import metadata

    names = [
        "tensorflow",
        "tensorflow-transform",
        "tensorflow-data-validation",
        "tfx-bsl",
        "apache-beam",
        "pyarrow",
        "duckdb",
        "sqlglot",
        "tf-keras",
        "numpy",
    ]
    versions = {"python": platform.python_version()}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description="Run the pipeline end to end.",
        epilog="Unknown flags (e.g. --runner DirectRunner --direct_num_workers 2) go to Beam.",
    )
    parser.add_argument("--dataset", default="taxi", help="dataset definition name")
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument(
        "--db", type=Path, help="warehouse DuckDB file (default: the taxi sample in --data-dir)"
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
    parser.add_argument("--model-name", default="taxi")
    parser.add_argument("--train-steps", type=int, default=1000)
    parser.add_argument("--parity-rows", type=int, default=200)
    parser.add_argument("--predict-rows", type=int, default=3)
    parser.add_argument(
        "--push-base",
        help="model base (path or gs:// URI) that blessed exports are pushed to "
        "(default: models/<model-name>)",
    )
    parser.add_argument("--auc-floor", type=float, default=0.6, help="bless only above this AUC")
    parser.add_argument(
        "--auc-tolerance",
        type=float,
        default=0.01,
        help="bless only if eval AUC is at most this much below the served version's",
    )
    parser.add_argument("--start", help="first day of the data interval (YYYY-MM-DD), inclusive")
    parser.add_argument("--end", help="end of the data interval (YYYY-MM-DD), exclusive")
    warehouse = parser.add_argument_group(
        "warehouse", "where the warehouse SQL runs: the embedded DuckDB file or BigQuery"
    )
    warehouse.add_argument("--warehouse-engine", choices=("duckdb", "bigquery"), default="duckdb")
    warehouse.add_argument("--table", help="source dataset.table (default: the definition's)")
    warehouse.add_argument("--bq-project", help="bigquery: project that runs the jobs")
    warehouse.add_argument("--bq-dataset", help="bigquery: dataset receiving the split tables")
    warehouse.add_argument("--bq-location", default="US", help="bigquery: job location")
    warehouse.add_argument(
        "--bq-label", action="append", default=[], metavar="KEY=VALUE", help="bigquery job label"
    )
    add_runner_arguments(parser)
    args, beam_args = parser.parse_known_args(argv)
    if problem := runner_flag_conflict(args, beam_args):
        parser.error(problem)
    return args, beam_args


def bigquery_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """BigQueryOptions fields for ``--warehouse-engine bigquery`` (None for DuckDB).

    The split tables are named after the run (``split_<run id>_train``, ...), so daily runs
    never overwrite each other's tables; a rerun of the same interval replaces its own.
    """
    if args.warehouse_engine != "bigquery":
        return None
    if not (args.bq_project and args.bq_dataset):
        raise StageFailed("--warehouse-engine bigquery needs --bq-project and --bq-dataset")
    labels = dict(label.split("=", 1) for label in args.bq_label if "=" in label)
    labels.setdefault("pipeline", args.dataset)
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
        raise StageFailed(f"unknown stage(s) {unknown}; known: {', '.join(STAGES)}")
    return names


def _open_recorder(args: argparse.Namespace, beam_args: list[str], partial: bool) -> RunRecorder:
    """A new run directory, or (for ``--stages``) the existing one's manifest to continue."""
    run_dir = storage.join(args.runs_dir, args.run_id)
    manifest_path = storage.join(run_dir, MANIFEST)
    if args.restart and storage.exists(run_dir):
        _discard_run_dir(run_dir)
    if storage.isfile(manifest_path) and not partial:
        raise StageFailed(f"run directory {run_dir} already holds a run; pick another --run-id")
    if storage.isfile(manifest_path):
        return RunRecorder(run_dir, json.loads(storage.read_text(manifest_path)))
    storage.makedirs(run_dir)
    return RunRecorder(
        run_dir,
        {
            "run_id": args.run_id,
            "dataset": args.dataset,
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


def run(args: argparse.Namespace, beam_args: list[str]) -> dict[str, Any]:
    """Run the selected stages; return the manifest. Raises when a stage stops the run."""
    selected = _selected_stages(args.stages)
    args.run_id = args.run_id or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    bigquery = bigquery_options(args)  # bad flags fail before anything is written
    recorder = _open_recorder(args, beam_args, partial=bool(args.stages))
    manifest = recorder.manifest
    ctx = RunContext(
        dataset=get_dataset(args.dataset),
        run_dir=recorder.run_dir,
        manifest=manifest,
        beam_args=beam_args,
        data_dir=args.data_dir,
        db=args.db,
        model_name=args.model_name,
        train_steps=args.train_steps,
        parity_rows=args.parity_rows,
        predict_rows=args.predict_rows,
        start=args.start,
        end=args.end,
        push_base=args.push_base,
        auc_floor=args.auc_floor,
        auc_tolerance=args.auc_tolerance,
        warehouse_engine=args.warehouse_engine,
        bigquery=bigquery,
        source_table=args.table,
    )
    manifest.pop("error", None)
    manifest.pop("traceback", None)
    try:
        with _beam_session(args, beam_args, selected) as stage_beam_args:
            ctx.beam_args = stage_beam_args
            for name in selected:
                with recorder.stage(name) as record:
                    STAGES[name](ctx, record)
        done = all(manifest["stages"].get(n, {}).get("status") == "succeeded" for n in STAGES)
        manifest["status"] = "succeeded" if done else "in_progress"
    except BaseException as error:
        manifest["status"] = "failed"
        manifest["error"] = f"{type(error).__name__}: {error}"
        manifest["traceback"] = traceback.format_exc(limit=8)
        raise
    finally:
        manifest["finished_at"] = dt.datetime.now(dt.UTC).isoformat()
        recorder.save()
    if manifest["status"] == "succeeded":
        _point_latest(args.runs_dir, args.run_id)
    return manifest


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


def summary(manifest: dict[str, Any]) -> str:
    """A short human summary of a run manifest."""
    lines = [f"Run {manifest['run_id']}: {manifest['status']}  ({manifest['run_dir']})"]
    for name, stage in manifest["stages"].items():
        lines.append(f"  {name:<11} {stage['status']:<10} {stage.get('seconds', 0):8.1f} s")
    if rows := manifest.get("rows_per_split"):
        lines.append("  rows per split: " + ", ".join(f"{k}={v}" for k, v in rows.items()))
    anomalies = manifest.get("anomalies", [])
    blocking = sum(1 for a in anomalies if a.get("severity") == "BLOCKING")
    lines.append(f"  anomalies: {blocking} blocking, {len(anomalies) - blocking} warnings")
    for anomaly in anomalies[:10]:
        lines.append(
            f"    {anomaly.get('severity')}: {anomaly.get('split')}/{anomaly.get('check')} "
            f"{anomaly.get('feature')}: "
            f"{anomaly.get('short_description')}"
        )
    for split in ("eval", "test"):
        lines.extend(_metric_lines(manifest.get("metrics", {}), split))
    parity = manifest["stages"].get("parity", {})
    if "passed" in parity:
        lines.append(
            f"  parity: {'passed' if parity['passed'] else 'FAILED'} on {parity['rows']} rows, "
            f"{len(parity['features_compared'])} features, max feature deviation "
            f"{max(parity['max_relative_deviation'].values(), default=0):.2e}"
        )
    for prediction in manifest.get("predictions", []):
        request = prediction["request"]
        lines.append(
            f"  served: P(big tipper)={prediction['probability']:.4f} for a "
            f"{request.get('payment_type')} trip, fare {_number(request.get('fare'))}, "
            f"{_number(request.get('trip_miles'))} miles"
        )
    push = manifest["stages"].get("push", {})
    if "blessed" in push:
        verdict = f"pushed as version {push['version']}" if push["blessed"] else "not pushed"
        lines.append(f"  push: {verdict} ({push['reason']})")
    if manifest["status"] != "succeeded":
        lines.append(f"  error: {manifest.get('error')}")
    return "\n".join(lines)


def _number(value: Any) -> str:
    return "missing" if value is None else f"{value:.2f}"


def _metric_lines(metrics: dict[str, Any], split: str) -> list[str]:
    """One line per model (wide-and-deep, wide only, majority class) on ``split``."""
    lines = []
    for label, key in (
        ("wide & deep", split),
        ("wide only", f"wide_baseline_{split}"),
        ("majority", f"majority_baseline_{split}"),
    ):
        if values := metrics.get(key):
            cells = [f"{name} {values[name]:.4f}" for name in ("auc", "accuracy", "log_loss")
                     if name in values]  # fmt: skip
            lines.append(f"  {split:<4} {label:<11} " + ", ".join(cells))
    return lines


def is_verdict(error: BaseException) -> bool:
    """True when the run stopped on purpose (see :data:`EXIT_VERDICT`), not by a crash.

    A worker environment that cannot host the pipeline (its Python lacks apache_beam or this
    project) is a setup error like a bad flag: a retry would end the same way.
    """
    from pipeline.runners import WorkerEnvironmentError
    from pipeline.validation.anomalies import ValidationFailed

    return isinstance(error, StageFailed | ValidationFailed | WorkerEnvironmentError)


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
    try:
        manifest = run(args, beam_args)
    except Exception as error:  # the summary and manifest carry the details
        manifest_path = storage.join(args.runs_dir, args.run_id or "", MANIFEST)
        print(f"\nRUN FAILED: {type(error).__name__}: {error}", file=sys.stderr)
        with contextlib.suppress(Exception):  # a crash may have left no readable manifest
            if storage.isfile(manifest_path):
                print(summary(json.loads(storage.read_text(manifest_path))), file=sys.stderr)
        return exit_status(error)
    print()
    print(summary(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
