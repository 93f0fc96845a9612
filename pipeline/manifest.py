"""The run manifest: what a run did, written where its artifacts are, and its human summary.

``manifest.json`` records the run's arguments, the stack's versions and, per stage, its status,
time and results (rows per split, anomalies, metrics, artifact paths and digests). A stage's
record reads ``running`` on disk before the stage touches its outputs and ``succeeded`` only
after they are complete, so a crash (even a kill) leaves a record of where it happened, and
later stages read their inputs only through succeeded records.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import time
from collections.abc import Iterator
from typing import Any

from pipeline import storage

MANIFEST = "manifest.json"
log = logging.getLogger("pipeline.run")


class RunRecorder:
    """Keeps the run manifest and writes it whenever a stage starts or ends."""

    def __init__(self, run_dir: str, manifest: dict[str, Any]):
        self.run_dir = run_dir
        self.manifest: dict[str, Any] = {**manifest, "status": "running"}
        self.save()

    @property
    def path(self) -> str:
        return storage.join(self.run_dir, MANIFEST)

    def save(self) -> None:
        storage.write_json_atomic(self.path, self.manifest)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        record: dict[str, Any] = {"status": "running", "started_at": _now()}
        # A rerun of a stage replaces its record; later stages' records stay until they rerun.
        self.manifest["stages"][name] = record
        self.save()  # on disk before the stage writes anything
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


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def stack_versions() -> dict[str, str]:
    """Versions of the libraries that shape the artifacts."""
    from importlib import metadata

    names = [
        "tensorflow", "tensorflow-transform", "tensorflow-data-validation", "tfx-bsl",
        "apache-beam", "pyarrow", "duckdb", "sqlglot", "tf-keras", "numpy", "scikit-learn",
    ]  # fmt: skip
    versions = {"python": platform.python_version()}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


# ---- the human summary ------------------------------------------------------------------------


def summary(manifest: dict[str, Any]) -> str:
    """A short human summary of a run manifest."""
    lines = [
        f"Run {manifest['run_id']} of {manifest.get('dataset')}: {manifest['status']}  "
        f"({manifest['run_dir']})"
    ]
    for name, stage in manifest["stages"].items():
        lines.append(f"  {name:<11} {stage['status']:<10} {stage.get('seconds', 0):8.1f} s")
    if rows := manifest.get("rows_per_split"):
        lines.append("  rows per split: " + ", ".join(f"{k}={v}" for k, v in rows.items()))
    warehouse = manifest["stages"].get("warehouse", {})
    if removed := {k: v for k, v in warehouse.get("removed_rows", {}).items() if v}:
        lines.append("  removed by filters: " + ", ".join(f"{k}={v}" for k, v in removed.items()))
    if warehouse.get("duplicate_rows"):
        lines.append(f"  exact duplicate rows in the table: {warehouse['duplicate_rows']}")
    anomalies = manifest.get("anomalies", [])
    blocking = sum(1 for a in anomalies if a.get("severity") == "BLOCKING")
    lines.append(f"  anomalies: {blocking} blocking, {len(anomalies) - blocking} warnings")
    for anomaly in anomalies[:10]:
        lines.append(
            f"    {anomaly.get('severity')}: {anomaly.get('split')}/{anomaly.get('check')} "
            f"{anomaly.get('feature')}: {anomaly.get('short_description')}"
        )
    metrics = manifest.get("metrics", {})
    for split in ("eval", "test"):
        lines.extend(_metric_lines(metrics, split))
    parity = manifest["stages"].get("parity", {})
    if "passed" in parity:
        lines.append(
            f"  parity: {'passed' if parity['passed'] else 'FAILED'} on {parity['rows']} rows, "
            f"{len(parity['features_compared'])} features, max feature deviation "
            f"{max(parity['max_relative_deviation'].values(), default=0):.2e}"
        )
    online = parity.get("online", {})
    if "passed" in online:
        prediction = online.get("max_prediction_deviation")
        lines.append(
            f"  online parity: {'passed' if online['passed'] else 'FAILED'} on {online['rows']} "
            f"of {online['eval_rows']} eval rows ({online['subset']}), "
            f"{len(online['columns_compared'])} derived columns, {online['mismatch_count']} "
            f"mismatches, {online['events_replayed']} events streamed into {online['store']}"
            + ("" if prediction is None else f", max prediction deviation {prediction:.2e}")
        )
    lines.extend(_evaluation_lines(manifest["stages"].get("evaluate", {})))
    for prediction in manifest.get("predictions", []):
        lines.append("  served: " + describe_prediction(prediction, manifest))
    push = manifest["stages"].get("push", {})
    if "blessed" in push:
        verdict = f"pushed as version {push['version']}" if push["blessed"] else "not pushed"
        lines.append(f"  push: {verdict} ({push['reason']})")
    if manifest["status"] != "succeeded" and manifest.get("error"):
        lines.append(f"  error: {manifest.get('error')}")
    for name, path in report_paths(manifest).items():
        lines.append(f"  {name + ' report:':<19}{path}")
    return "\n".join(lines)


def report_paths(manifest: dict[str, Any]) -> dict[str, str]:
    """The run's HTML reports that were written: ``validation`` (statistics/report.html) and
    ``model`` (evaluation/report.html)."""
    stages = manifest.get("stages", {})
    found = {
        "validation": stages.get("validation", {}).get("report_html"),
        "model": stages.get("evaluate", {}).get("report_html"),
    }
    return {name: str(path) for name, path in found.items() if path}


def _evaluation_lines(record: dict[str, Any]) -> list[str]:
    """The blessing metric of both models on the same eval rows, and the slice verdict."""
    blessing = record.get("blessing")
    if not blessing:
        return []
    metric, models = blessing["metric"], record.get("models", {})
    shown = []
    for role, model in models.items():
        name = "candidate" if role == "candidate" else f"served version {model.get('version')}"
        shown.append(f"{name} {metric} {model['metrics'].get(metric, float('nan')):.4f}")
    lines = [f"  evaluate: {', '.join(shown)} on the same {record.get('rows', 0)} eval rows"]
    if slices := blessing.get("slices"):
        lines.append(f"  slices: {slices['reason']}")
    return lines


def describe_prediction(prediction: dict[str, Any], manifest: dict[str, Any]) -> str:
    """``late_arrival=late (p=0.71) for carrier=UA, origin=EWR, dest=IAH``."""
    if "prediction" in prediction:
        answer = f"{prediction['label']}={prediction['prediction']:.2f}"
    elif "probability" in prediction:
        answer = f"{prediction['label']}={prediction['class']} (p={prediction['probability']:.4f})"
    else:
        answer = f"{prediction['label']}={prediction['class']}"
    columns = manifest.get("display_columns") or list(prediction.get("request", {}))[:3]
    request = prediction.get("request", {})
    shown = ", ".join(f"{c}={_value(request.get(c))}" for c in columns)
    return f"{answer} for {shown}"


def _value(value: Any) -> str:
    if value is None:
        return "missing"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


_MODEL_ROWS = (
    ("wide & deep", ""),
    ("no derived", "no_derived_baseline_"),
    ("wide only", "wide_baseline_"),
    ("majority", "majority_baseline_"),
    ("mean", "mean_baseline_"),
)


def _metric_lines(metrics: dict[str, Any], split: str) -> list[str]:
    """One line per model (wide-and-deep, wide only, trivial baseline) on ``split``."""
    lines = []
    for label, prefix in _MODEL_ROWS:
        values = metrics.get(f"{prefix}{split}")
        if not values:
            continue
        cells = [f"{name} {value:.4f}" for name, value in values.items()
                 if name != "examples" and isinstance(value, int | float)]  # fmt: skip
        lines.append(f"  {split:<4} {label:<9} " + ", ".join(cells[:4]))
    return lines
