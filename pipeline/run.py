"""Run the whole pipeline end to end in one process tree.

    python -m pipeline.run --runner DirectRunner [flags] [Beam pipeline options]

Stages: data (embedded warehouse) -> warehouse split -> validation -> transform -> train ->
export -> parity -> predict (fresh process). Every run gets its own directory under ``--runs-dir``
with a ``manifest.json`` (status, stage timings, rows per split, anomalies, metrics, artifact
paths and digests, versions of the stack). Flags this module does not know are passed to Beam's
``PipelineOptions``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.artifacts import sha256_file, tree_digest, write_json_atomic
from pipeline.dataset import DatasetDefinition
from pipeline.datasets import get_dataset

MANIFEST = "manifest.json"
LATEST_LINK = "LATEST"
log = logging.getLogger("pipeline.run")


class StageFailed(RuntimeError):
    """A stage stopped the run; the message says which stage and why."""


class RunRecorder:
    """Keeps the run manifest and writes it after every stage, so a crash still leaves a record."""

    def __init__(self, run_dir: Path, base: dict[str, Any]):
        self.run_dir = run_dir
        self.manifest: dict[str, Any] = {**base, "status": "running", "stages": {}}
        self.save()

    def save(self) -> None:
        write_json_atomic(self.run_dir / MANIFEST, self.manifest)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        record: dict[str, Any] = {"status": "running"}
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
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--run-id", help="default: UTC time of the start")
    parser.add_argument("--model-name", default="taxi")
    parser.add_argument("--train-steps", type=int, default=1000)
    parser.add_argument("--parity-rows", type=int, default=200)
    parser.add_argument("--predict-rows", type=int, default=3)
    parser.add_argument("--start", help="first day of the data interval (YYYY-MM-DD), inclusive")
    parser.add_argument("--end", help="end of the data interval (YYYY-MM-DD), exclusive")
    return parser.parse_known_args(argv)


def run(args: argparse.Namespace, beam_args: list[str]) -> dict[str, Any]:
    """Run every stage; return the manifest. Raises ``StageFailed`` when a stage stops the run."""
    from pipeline import data, validate, warehouse
    from pipeline.export import export_serving_model
    from pipeline.parity import check_parity
    from pipeline.train import TrainConfig, train_and_evaluate
    from pipeline.transform import run_transform

    dataset = get_dataset(args.dataset)
    run_id = args.run_id = args.run_id or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = args.runs_dir / run_id
    if (run_dir / MANIFEST).exists():
        raise StageFailed(f"run directory {run_dir} already holds a run; pick another --run-id")
    run_dir.mkdir(parents=True, exist_ok=True)
    recorder = RunRecorder(
        run_dir,
        {
            "run_id": run_id,
            "dataset": dataset.name,
            "started_at": dt.datetime.now(dt.UTC).isoformat(),
            "arguments": {k: str(v) for k, v in vars(args).items()},
            "beam_args": beam_args,
            "versions": stack_versions(),
        },
    )
    manifest = recorder.manifest
    try:
        with recorder.stage("data") as record:
            db_path = args.db or data.ensure_taxi_warehouse(args.data_dir)
            record.update(warehouse_file=str(db_path), table=dataset.table)

        with recorder.stage("warehouse") as record:
            config = warehouse.default_split_config(dataset, start=args.start, end=args.end)
            split = warehouse.run_split(config, run_dir / "splits", db_path=db_path)
            record.update(split.to_manifest())
            manifest["rows_per_split"] = split.row_counts
            split_dirs = {name: Path(path) for name, path in split.splits.items()}

        with recorder.stage("validation") as record:
            reports = _validate(dataset, split_dirs, run_dir / "statistics", beam_args, validate)
            record["reports"] = {name: r.to_manifest() for name, r in reports.items()}
            record["report_html"] = str(run_dir / "statistics" / "report.html")
            manifest["anomalies"] = [
                {"split": name, **anomaly}
                for name, r in record["reports"].items()
                for anomaly in r["anomalies"]
            ]
            for report in reports.values():
                validate.check(report)

        with recorder.stage("transform") as record:
            transformed = run_transform(dataset, split_dirs, run_dir / "transform", beam_args)
            record.update(transformed.to_manifest())
            record["transform_fn_sha256"] = tree_digest(transformed.output_dir / "transform_fn")

        with recorder.stage("train") as record:
            trained = train_and_evaluate(
                dataset,
                transformed.output_dir,
                transformed.example_patterns,
                run_dir / "model",
                TrainConfig(train_steps=args.train_steps),
            )
            record.update(trained.to_manifest())
            manifest["metrics"] = trained.metrics

        with recorder.stage("export") as record:
            exported = export_serving_model(
                dataset,
                trained.model_dir,
                transformed.output_dir,
                run_dir / "serving" / args.model_name,
            )
            record.update(exported.to_manifest())
            record["sha256"] = tree_digest(exported.export_dir)

        with recorder.stage("parity") as record:
            parity = check_parity(
                dataset,
                transformed.output_dir,
                exported.export_dir,
                split_dirs["eval"],
                rows=args.parity_rows,
                model_dir=trained.model_dir,
            )
            record.update(parity.to_manifest())
            if not parity.passed:
                raise StageFailed(
                    "serving features differ from training features:\n  "
                    + "\n  ".join(parity.mismatches[:20])
                )

        with recorder.stage("predict") as record:
            record.update(
                _predict_in_fresh_process(
                    dataset, exported.export_dir, split_dirs["eval"], args.predict_rows
                )
            )
            manifest["predictions"] = record["predictions"]

        manifest["schema_sha256"] = sha256_file(validate.schema_path(dataset.name))
        manifest["status"] = "succeeded"
    except BaseException as error:
        manifest["status"] = "failed"
        manifest["error"] = f"{type(error).__name__}: {error}"
        manifest["traceback"] = traceback.format_exc(limit=8)
        raise
    finally:
        manifest["finished_at"] = dt.datetime.now(dt.UTC).isoformat()
        manifest["run_dir"] = str(run_dir)
        recorder.save()
    _point_latest(args.runs_dir, run_id)
    return manifest


def _validate(dataset: DatasetDefinition, split_dirs, stats_dir: Path, beam_args, validate):
    """Statistics of every split; each checked against the committed schema, drift from train.

    Writes the statistics and a self-contained HTML report under ``stats_dir``.
    """
    from pipeline.validation.report import write_html

    schema = validate.load_schema(dataset.name)
    stats = {
        name: validate.compute_statistics(
            f"{split_dir}/*.parquet", stats_dir / f"{name}.pb", beam_args
        )
        for name, split_dir in split_dirs.items()
    }
    reports = validate.validate_splits(stats, schema)
    write_html(
        stats_dir / "report.html", stats, reports, title=f"Validation: {stats_dir.parent.name}"
    )
    return reports


def _predict_in_fresh_process(dataset, export_dir: Path, split_dir: Path, rows: int) -> dict:
    command = [
        sys.executable,
        "-m",
        "pipeline.predict",
        "--dataset",
        dataset.name,
        "--export-dir",
        str(export_dir),
        "--split-dir",
        str(split_dir),
        "--rows",
        str(rows),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise StageFailed(f"prediction from the export failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _point_latest(runs_dir: Path, run_id: str) -> None:
    """Atomically repoint ``runs/LATEST`` at the newest succeeded run."""
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
    if metrics := manifest.get("metrics"):
        ev, base = metrics.get("eval", {}), metrics.get("majority_baseline_eval", {})
        lines.append(
            f"  eval AUC {ev.get('auc', float('nan')):.4f}, accuracy {ev.get('accuracy', 0):.4f}"
            f"  (majority baseline: AUC {base.get('auc', 0.5):.2f},"
            f" accuracy {base.get('accuracy', 0):.4f})"
        )
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
            f"{request.get('payment_type')} trip, fare {request.get('fare')}, "
            f"{request.get('trip_miles')} miles"
        )
    if manifest["status"] != "succeeded":
        lines.append(f"  error: {manifest.get('error')}")
    return "\n".join(lines)


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
        manifest_path = args.runs_dir / (args.run_id or "") / MANIFEST
        print(f"\nRUN FAILED: {type(error).__name__}: {error}", file=sys.stderr)
        if manifest_path.is_file():
            print(summary(json.loads(manifest_path.read_text())), file=sys.stderr)
        return 1
    print()
    print(summary(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
