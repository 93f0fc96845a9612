"""Any table: a dataset folder nobody here wrote runs end to end, and every label kind does.

A throwaway folder outside the repository (found through ``PIPELINE_DATASET_PATH``) holds a
CSV written here, a definition and a schema; ``pipeline.run`` takes it from the warehouse to a
pushed, served model without any other file changing. The flights variants run the regression
and multi-class heads on a deterministic sample of the real table.
"""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import EXIT_USAGE
from tests import numpy_reference as ref
from tests.conftest import PYTHON, REPO_ROOT, subprocess_env
from tests.model_report_dom import RenderedReport, assert_self_contained

pytestmark = pytest.mark.slow

DEFINITION = '''
"""Online orders: will the customer send the order back?"""

from pipeline.definition import (
    BinaryLabel, Column, ColumnType, CsvFormat, DatasetDefinition, Feature, LocalFiles, ModelPart,
    Source, SourceFile, SplitSettings, TimestampFormat,
)
from transforms import kinds

TABLE = "shop.orders"
COLUMNS = (
    Column("order_id", ColumnType.INT64, nullable=False),
    Column("placed_at", ColumnType.TIMESTAMP, nullable=False),
    Column("region", ColumnType.STRING),
    Column("amount", ColumnType.FLOAT64),
    Column("items", ColumnType.INT64),
    Column("returned", ColumnType.INT64, nullable=False),
)
DATASET = DatasetDefinition(
    name="orders",
    table=TABLE,
    columns=COLUMNS,
    label=BinaryLabel("sent_back", "returned", ">", 0),
    features=(
        Feature("region", "region", kinds.Vocabulary(num_oov_buckets=1)),
        Feature("amount", "amount", kinds.LogZScore(impute="median"), ModelPart.DEEP),
        Feature("items", "items", kinds.ZScore(impute="mean"), ModelPart.DEEP),
        Feature("hour", "placed_at", kinds.CalendarPart(part="hour", timezone="Europe/Paris")),
        Feature("region_items", ("region", "items"), kinds.Cross(hash_buckets=64), ModelPart.WIDE),
    ),
    source=Source(
        LocalFiles(),
        (SourceFile(TABLE, "orders.csv", format=CsvFormat(
            null_tokens=("", "NULL"), timestamps=TimestampFormat.ISO8601, timezone="Europe/Paris"
        )),),
    ),
    split=SplitSettings(key_columns=("order_id",)),
    unknown_at_serving=("returned",),
    timestamp_column="placed_at",
    display_columns=("region", "amount"),
)
'''

SCHEMA = """
default_environment: "TRAINING"
default_environment: "SERVING"
feature { name: "order_id" type: INT presence { min_fraction: 1.0 } value_count { min: 1 max: 1 } }
feature { name: "placed_at" type: INT presence { min_fraction: 1.0 } value_count { min: 1 max: 1 } }
feature { name: "region" type: BYTES presence { min_fraction: 0.9 } value_count { min: 1 max: 1 } }
feature { name: "amount" type: FLOAT presence { min_fraction: 0.9 } value_count { min: 1 max: 1 } }
feature { name: "items" type: INT presence { min_fraction: 0.9 } value_count { min: 1 max: 1 } }
feature {
  name: "returned" type: INT presence { min_fraction: 1.0 } value_count { min: 1 max: 1 }
  not_in_environment: "SERVING"
}
"""


def _write_orders(path: Path, rows: int = 2400) -> None:
    """Returns depend on the region and the amount; some values missing, 'NULL' as a token."""
    rng = np.random.default_rng(4)
    regions = rng.choice(["north", "south", "east", "west"], rows, p=[0.4, 0.3, 0.2, 0.1])
    amount = rng.lognormal(3.5, 0.8, rows)
    items = rng.integers(1, 8, rows)
    logit = -1.5 + 1.6 * (regions == "west") + 0.9 * (amount > 60) - 0.2 * items
    returned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    start = np.datetime64("2024-03-01T00:00:00")
    placed = start + rng.integers(0, 90 * 86400, rows).astype("timedelta64[s]")
    lines = ["order_id,placed_at,region,amount,items,returned"]
    for i in range(rows):
        region = "NULL" if i % 53 == 0 else regions[i]
        amount_text = "" if i % 41 == 0 else f"{amount[i]:.2f}"
        lines.append(f"{i},{placed[i]},{region},{amount_text},{items[i]},{returned[i]}")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def orders_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("team-datasets")
    folder = root / "orders"
    folder.mkdir()
    (folder / "definition.py").write_text(textwrap.dedent(DEFINITION))
    (folder / "schema.pbtxt").write_text(SCHEMA)
    _write_orders(folder / "orders.csv")
    return root


def _pipeline(args: list[str], work: Path, dataset_path: Path | None = None, **kwargs):
    env = subprocess_env()
    if dataset_path is not None:
        env["PIPELINE_DATASET_PATH"] = str(dataset_path)
    return subprocess.run(
        [PYTHON, "-m", *args],
        capture_output=True, text=True, cwd=work, env=env, check=False, timeout=1500, **kwargs,
    )  # fmt: skip


def _git_status() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture(scope="module")
def orders_run(orders_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("orders-work")
    before = _git_status()
    completed = _pipeline(
        ["pipeline.run", "--dataset", "orders", "--train-steps", "150", "--run-id", "r1"],
        work,
        orders_root,
    )
    assert completed.returncode == 0, completed.stderr[-5000:]
    assert _git_status() == before  # no file of the repository was touched
    manifest = json.loads((work / "runs" / "r1" / "manifest.json").read_text())
    return work, manifest, completed.stdout


def test_a_new_table_runs_end_to_end_from_its_folder(orders_run):
    work, manifest, stdout = orders_run
    assert manifest["status"] == "succeeded" and manifest["dataset"] == "orders"
    assert manifest["label"] == "sent_back = returned > 0"
    assert (work / "data" / "orders" / "warehouse.duckdb").is_file()
    assert sum(manifest["rows_per_split"].values()) == 2400
    metrics = manifest["metrics"]
    assert metrics["eval"]["auc"] > metrics["majority_baseline_eval"]["auc"] + 0.1
    parity = manifest["stages"]["parity"]
    assert parity["passed"] and len(parity["features_compared"]) == 5
    push = manifest["stages"]["push"]
    assert push["blessed"] and (work / push["version_dir"]).parent == work / "models" / "orders"
    assert "Run r1 of orders: succeeded" in stdout
    assert "served: sent_back=" in stdout and "for region=" in stdout


def test_the_new_table_is_served_by_its_own_name(orders_run, orders_root):
    work, _, _ = orders_run
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**subprocess_env(), "PIPELINE_DATASET_PATH": str(orders_root)}
    server = subprocess.Popen(
        [PYTHON, "-m", "pipeline.serving", "--dataset", "orders", "--port", str(port),
         "--poll-seconds", "0", "--grpc-port", "0"],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/v1/models/orders"
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(server.stderr.read().decode()[-3000:]) from None
                time.sleep(0.5)
        body = json.dumps(
            {"instances": [{"region": "west", "amount": 95.0, "items": 1, "order_id": 1,
                            "placed_at": 1711000000}]}
        ).encode()  # fmt: skip
        request = urllib.request.Request(f"{url}:predict", body, method="POST")
        answer = json.loads(urllib.request.urlopen(request, timeout=30).read())
        (prediction,) = answer["predictions"]
        assert 0 <= prediction["probabilities"] <= 1 and prediction["classes"] in (0, 1)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_dataset_without_a_schema_stops_at_validation_saying_where_to_put_one(
    orders_root, tmp_path
):
    root = tmp_path / "datasets"
    (root / "orders").mkdir(parents=True)
    for name in ("definition.py", "orders.csv"):
        (root / "orders" / name).write_bytes((orders_root / "orders" / name).read_bytes())
    completed = _pipeline(
        ["pipeline.run", "--dataset", "orders", "--run-id", "x", "--stages",
         "data,warehouse,validation"],
        tmp_path,
        root,
    )  # fmt: skip
    assert completed.returncode == 3, completed.stderr[-3000:]  # a verdict, not a crash
    assert f"looked for {root / 'orders' / 'schema.pbtxt'} and" in completed.stderr
    assert "pipeline.validation infer --dataset orders" in completed.stderr


def test_an_unknown_dataset_is_a_usage_error_before_anything_is_written(tmp_path):
    completed = _pipeline(["pipeline.run", "--dataset", "nope", "--run-id", "x"], tmp_path)
    assert completed.returncode == EXIT_USAGE
    assert "unknown dataset 'nope'" in completed.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("dataset", "metric", "baseline"),
    [("flights_delay_minutes", "rmse", "mean"), ("flights_lateness", "macro_f1", "majority")],
)
def test_regression_and_multiclass_variants_run_end_to_end(tmp_path, dataset, metric, baseline):
    """A 3% hash sample of the flights table (about 10,000 departures), 150 training steps; the
    model report has the label kind's own plots (checked in Chromium's DOM against NumPy)."""
    completed = _pipeline(
        ["pipeline.run", "--dataset", dataset, "--sample-fraction", "0.03", "--train-steps", "150",
         "--run-id", "s", "--data-dir", str(REPO_ROOT / "data")],
        tmp_path,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-5000:]
    manifest = json.loads((tmp_path / "runs" / "s" / "manifest.json").read_text())
    metrics = manifest["metrics"]
    assert {"eval", f"{baseline}_baseline_eval", "wide_baseline_eval"} <= set(metrics)
    push = manifest["stages"]["push"]
    assert (
        push["metric"] == metric and push["floor"] == metrics[f"{baseline}_baseline_eval"][metric]
    )
    assert manifest["stages"]["parity"]["passed"]
    removed = manifest["stages"]["warehouse"]["removed_rows"]
    assert removed["not_cancelled"] > 0 and removed["sample"] > 0
    predictions = manifest["predictions"]
    if dataset == "flights_delay_minutes":
        assert all(isinstance(p["prediction"], float) for p in predictions)
        assert push["higher_is_better"] is False
    else:
        assert all(p["class"] in ("on_time", "late", "very_late") for p in predictions)
        assert all(abs(sum(p["probabilities"]) - 1) < 1e-4 for p in predictions)
    report = RenderedReport(tmp_path / "runs" / "s" / "evaluation", tmp_path / "profile")
    assert_self_contained(report.html)
    if dataset == "flights_delay_minutes":
        _check_regression_report(report)
    else:
        _check_multiclass_report(report)
    _check_slice_table(report, "origin", metric)
    report.screenshots(tmp_path, f"model-report-{dataset}")


def _check_regression_report(report: RenderedReport) -> None:
    labels, predictions = report.rows["label"], report.rows["candidate"]
    figures = {name: report.figure(name) for name in ("predicted_actual", "residuals")}
    assert not any(f["data"].get("figure") == "roc" for f in report.charts.figures)
    # Every eval row is drawn (fewer than the scatter's cap), as (prediction, actual) and as
    # (prediction, residual).
    scatter = report.points(figures["predicted_actual"], "candidate")
    assert scatter == pytest.approx(np.column_stack([predictions, labels]), rel=1e-12)
    residuals = report.points(figures["residuals"], "candidate")
    assert residuals == pytest.approx(np.column_stack([predictions, labels - predictions]))
    # Per decile of the prediction: the mean prediction, actual and residual.
    edges = np.unique(np.quantile(predictions, np.linspace(0, 1, 11)))
    means = []
    for low, high in itertools.pairwise(edges):
        rows = (predictions > low) & (predictions <= high)
        rows |= (predictions == low) & (low == edges[0])
        means.append(
            [predictions[rows].mean(), labels[rows].mean(), (labels - predictions)[rows].mean()]
        )
    means = np.array(means)
    binned = report.points(figures["predicted_actual"], "candidate bin means")
    assert binned == pytest.approx(means[:, :2])
    assert report.points(figures["residuals"], "candidate bin means") == pytest.approx(
        means[:, [0, 2]]
    )
    counts, _ = np.histogram(labels - predictions, bins=20)
    histogram = report.figure("residual_histogram")
    drawn = sorted(histogram["marks"], key=lambda m: float(m["data-low"]))
    assert [float(m["data-value"]) for m in drawn] == counts.tolist()
    table = report.metrics_rows()
    assert table[("candidate", "serving_default on the raw eval rows")][0] == (
        f"{ref.rmse(labels, predictions):.4f}"
    )


def _check_multiclass_report(report: RenderedReport) -> None:
    labels, probabilities = report.rows["label"], np.stack(report.rows["candidate"])
    classes = ["on_time", "late", "very_late"]
    predicted = probabilities.argmax(axis=1)
    counts = ref.confusion(labels, predicted, 3)
    heatmap = report.cells(report.figure("confusion_matrix", model="candidate"))
    assert heatmap == {
        (classes[a], classes[p]): float(counts[a, p]) for a in range(3) for p in range(3)
    }
    bars = report.bars(report.figure("per_class"))
    for k, name in enumerate(classes):
        precision = counts[k, k] / counts[:, k].sum() if counts[:, k].sum() else 0.0
        recall = counts[k, k] / counts[k, :].sum()
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert bars[("precision", name)] == pytest.approx(precision)
        assert bars[("recall", name)] == pytest.approx(recall)
        assert bars[("f1", name)] == pytest.approx(f1)
    rows, _, _ = ref.reliability_bins(predicted == labels, probabilities.max(axis=1))
    calibration = sorted(
        report.figure("calibration_counts")["marks"], key=lambda m: float(m["data-low"])
    )
    assert [float(m["data-value"]) for m in calibration] == rows
    table = report.metrics_rows()
    macro_f1 = table[("candidate", "serving_default on the raw eval rows")][1]
    assert macro_f1 == f"{ref.macro_f1(labels, predicted, 3):.4f}"


def _check_slice_table(report: RenderedReport, name: str, metric: str) -> None:
    """No served version yet: each origin's metric is reported, nothing is compared."""
    labels, keys = report.rows["label"], report.rows[f"slice.{name}"]
    candidate = report.rows["candidate"]
    rows = report.parsed.tables[name][1:]
    assert {attrs["data-key"] for attrs, _ in rows} == set(keys.tolist())
    for attrs, cells in rows:
        mask = keys == attrs["data-key"]
        if metric == "rmse":
            expected = ref.rmse(labels[mask], candidate[mask])
        else:
            expected = ref.macro_f1(labels[mask], np.stack(candidate[mask]).argmax(axis=1), 3)
        assert cells[1] == f"{mask.sum():,}" and cells[2] == f"{expected:.4f}"
        assert attrs["data-status"] == "no served model"
