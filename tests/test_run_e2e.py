"""End to end: ``python -m pipeline.run`` on the taxi sample, as a user runs it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest

from pipeline import storage
from pipeline.cli import EXIT_USAGE
from pipeline.data import ensure_warehouse
from pipeline.datasets import get_dataset
from pipeline.validation.stats import load_statistics
from pipeline.verdicts import EXIT_VERDICT
from tests.conftest import PYTHON, REPO_ROOT, subprocess_env

pytestmark = pytest.mark.slow

STAGES = [
    "data",
    "warehouse",
    "validation",
    "transform",
    "train",
    "export",
    "parity",
    "baselines",
    "evaluate",
    "predict",
    "push",
]


def _run(runs_dir: Path | str, *extra: str) -> subprocess.CompletedProcess:
    models_dir = storage.join(storage.parent(runs_dir), "models")
    return subprocess.run(
        [
            PYTHON,
            "-m",
            "pipeline.run",
            "--runner",
            "DirectRunner",
            "--runs-dir",
            str(runs_dir),
            "--data-dir",
            str(REPO_ROOT / "data"),
            "--train-steps",
            "200",
            "--models-dir",
            models_dir,
            *extra,
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=subprocess_env(),
        check=False,
        timeout=1200,
    )


@pytest.fixture(scope="module")
def taxi_run(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("runs")
    completed = _run(runs_dir, "--run-id", "first")
    assert completed.returncode == 0, completed.stderr[-5000:]
    (runs_dir / "first.stderr.txt").write_text(completed.stderr)  # for the console test
    manifest = json.loads((runs_dir / "first" / "manifest.json").read_text())
    return runs_dir, manifest, completed.stdout


def test_run_succeeds_with_every_stage(taxi_run):
    _, manifest, _ = taxi_run
    assert manifest["status"] == "succeeded"
    assert list(manifest["stages"]) == STAGES
    assert all(stage["status"] == "succeeded" for stage in manifest["stages"].values())
    assert all(stage["seconds"] >= 0 for stage in manifest["stages"].values())


def test_manifest_counts_rows_and_records_versions(taxi_run):
    _, manifest, _ = taxi_run
    rows = manifest["rows_per_split"]
    assert set(rows) == {"train", "eval", "test"}
    assert sum(rows.values()) > 14_000  # 15,002 rows minus the filtered ones
    assert manifest["stages"]["transform"]["rows"] == rows
    assert manifest["versions"]["tensorflow-transform"] == "1.16.0"
    assert len(manifest["schema_sha256"]) == 64
    assert len(manifest["artifacts"]["export"]["sha256"]) == 64


def test_model_beats_the_majority_baseline(taxi_run):
    _, manifest, _ = taxi_run
    metrics = manifest["metrics"]
    assert metrics["eval"]["auc"] > metrics["majority_baseline_eval"]["auc"] + 0.2
    assert metrics["eval"]["accuracy"] > metrics["majority_baseline_eval"]["accuracy"]


def test_parity_and_a_served_prediction(taxi_run):
    runs_dir, manifest, stdout = taxi_run
    parity = manifest["stages"]["parity"]
    assert parity["passed"] and parity["rows"] == 200
    assert len(parity["features_compared"]) == len(get_dataset("taxi").features) == 20
    online = parity["online"]  # the window counts, replayed through the streaming job
    assert online["passed"] and online["mismatch_count"] == 0 and online["store"] == "sqlite"
    assert "online parity: passed" in stdout
    predictions = manifest["predictions"]
    assert len(predictions) == 3 and all(0 <= p["probability"] <= 1 for p in predictions)
    # predict's fresh process started right after export, beside parity and evaluate.
    predict = manifest["stages"]["predict"]
    assert predict["started_early"] is True
    assert predict["process_seconds"] > predict["seconds"]
    # The transform ran in a process started after the warehouse stage, beside validation; the
    # baselines in one started after the transform, beside train, export and parity.
    assert manifest["stages"]["transform"]["started_early"] is True
    assert manifest["stages"]["baselines"]["started_early"] is True
    assert "parity: passed" in stdout and "served: big_tipper=" in stdout
    assert "for payment_type=" in stdout
    assert (runs_dir / "LATEST").resolve() == (runs_dir / "first").resolve()


def test_a_blessed_model_is_pushed_in_the_serving_layout(taxi_run):
    runs_dir, manifest, stdout = taxi_run
    push = manifest["stages"]["push"]
    assert push["blessed"] is True and manifest["pushed"] is True
    version_dir = Path(push["version_dir"])
    assert version_dir.parent == runs_dir.parent / "models" / "taxi"
    assert (version_dir / "saved_model.pb").is_file()
    blessing = json.loads((version_dir / "blessing.json").read_text())
    assert blessing["metric"] == "auc"
    assert blessing["value"] == pytest.approx(manifest["metrics"]["eval"]["auc"])
    assert blessing["floor"] == manifest["metrics"]["majority_baseline_eval"]["auc"] == 0.5
    assert f"push: pushed as version {push['version']}" in stdout
    # Nothing served before this run: blessed on the floor, slices reported but not compared.
    assert blessing["slices"]["served_version"] is None and blessing["slices"]["passed"]


def test_the_summary_ends_with_both_reports(taxi_run):
    runs_dir, manifest, stdout = taxi_run
    run_dir = runs_dir / "first"
    validation = run_dir / "statistics" / "report.html"
    model = run_dir / "evaluation" / "report.html"
    assert stdout.rstrip().splitlines()[-2:] == [
        f"  validation report: {validation}",
        f"  model report:      {model}",
    ]
    assert validation.is_file() and model.read_text().startswith("<!DOCTYPE html>")
    evaluate = manifest["stages"]["evaluate"]
    assert evaluate["report_html"] == str(model)
    # The served path's eval metrics (raw rows through serving_default) are the training
    # stage's (transformed eval split): the same model on the same rows.
    served_path = evaluate["models"]["candidate"]["metrics"]
    assert served_path["auc"] == pytest.approx(manifest["metrics"]["eval"]["auc"], abs=1e-4)
    assert served_path["examples"] == manifest["rows_per_split"]["eval"]
    assert "evaluate: candidate auc " in stdout


def test_the_console_shows_progress_lines_and_nothing_else(taxi_run):
    """No TensorFlow/TFDV start-up noise (see test_console.py), a line per stage and epoch."""
    runs_dir, manifest, _ = taxi_run
    stderr = (runs_dir / "first.stderr.txt").read_text()
    lines = stderr.splitlines()
    assert [line for line in lines if not re.match(r"^\[\s*\d+\.\d+s\] \S", line)] == []
    for stage in STAGES:
        assert f"] {stage}: started" in stderr
        assert re.search(rf"\] {stage}: done in \d+\.\d s", stderr), stage
    steps = manifest["stages"]["train"]["steps"]
    assert f"train: wide_and_deep step {steps}/200, loss " in stderr
    assert (
        "baselines: started (models to compare with, in a process started after transform)"
        in stderr
    )
    assert re.search(r"baselines: done in .*: wide_only \d+ steps, no_derived \d+ steps", stderr)
    assert re.search(r"validation: done in .*\(\d+ Beam stages\)", stderr)
    assert "transform: started (TFT analyze train, transform rows train=" in stderr
    assert ", in a process started after warehouse)" in stderr


def test_the_same_inputs_give_the_same_bytes_under_another_run_id(taxi_run):
    """Splits, statistics, report, transform graph, TFRecords, weights and export: every
    artifact digest in the two manifests is the same, and so are the metrics."""
    runs_dir, first, _ = taxi_run
    completed = _run(runs_dir, "--run-id", "second")
    assert completed.returncode == 0, completed.stderr[-5000:]
    second = json.loads((runs_dir / "second" / "manifest.json").read_text())
    names = set(first["artifacts"])
    expected = {"splits/train", "statistics/train", "transform/transform_fn", "model", "export"}
    assert expected <= names and "evaluation/report.html" in names
    assert set(second["artifacts"]) == names
    # The evaluation also depends on what is served: nothing for the first run, the first run's
    # push for the second. Everything else depends on the inputs only.
    for name in sorted(n for n in names if not n.startswith("evaluation/")):
        assert first["artifacts"][name]["sha256"] == second["artifacts"][name]["sha256"], name
    assert first["metrics"] == second["metrics"]
    # The second run's candidate is the served version byte for byte: the same predictions, so
    # no slice differs, and it is blessed.
    blessing = second["stages"]["evaluate"]["blessing"]
    assert blessing["baseline_version"] == first["stages"]["push"]["version"]
    assert blessing["blessed"] and blessing["slices"]["gated"] > 0
    differences = [
        k["difference"] for k in blessing["slices"]["keys"] if k["difference"] is not None
    ]
    assert differences and set(differences) == {0.0}
    models = second["stages"]["evaluate"]["models"]
    assert models["candidate"]["metrics"] == models["served"]["metrics"]
    export = Path(second["artifacts"]["export"]["path"]) / "saved_model.pb"
    assert str(runs_dir).encode() not in export.read_bytes()  # no path of this machine inside


def test_rerun_with_the_same_id_refuses_to_overwrite(taxi_run):
    runs_dir, _, _ = taxi_run
    completed = _run(runs_dir, "--run-id", "first")
    assert completed.returncode == EXIT_USAGE
    assert "already holds a run" in completed.stderr


def test_blocking_anomaly_stops_the_run_before_transform(tmp_path):
    """Fares in cents are out of the schema's range: the run must stop at validation."""
    db = tmp_path / "warehouse.duckdb"
    shutil.copy(ensure_warehouse(get_dataset("taxi"), REPO_ROOT / "data"), db)
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE chicago_taxi_trips.taxi_trips SET fare = fare * 100")
    runs_dir = tmp_path / "runs"
    completed = _run(runs_dir, "--run-id", "cents", "--db", str(db))
    assert completed.returncode == EXIT_VERDICT
    manifest = json.loads((runs_dir / "cents" / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["stages"]["validation"]["status"] == "failed"
    assert "fare" in manifest["stages"]["validation"]["error"]
    failed = r"\] validation: failed after \d+\.\d s \(ValidationFailed\)"
    assert re.search(failed, completed.stderr)
    assert "transform" not in manifest["stages"]
    # The transform had started beside validation: killed, and its staging copy removed.
    assert not (runs_dir / "cents" / "transform").exists()
    assert storage.leftover_copies(runs_dir / "cents" / "transform") == []
    assert not (runs_dir / "LATEST").exists()


def test_stages_run_one_at_a_time_in_the_same_run_directory(tmp_path):
    """The DAG runs one stage per task: each continues the run directory of the same run id."""
    runs_dir = tmp_path / "runs"
    first = _run(runs_dir, "--run-id", "steps", "--stages", "data,warehouse")
    assert first.returncode == 0, first.stderr[-3000:]
    manifest = json.loads((runs_dir / "steps" / "manifest.json").read_text())
    assert manifest["status"] == "in_progress"
    assert list(manifest["stages"]) == ["data", "warehouse"]

    again = _run(runs_dir, "--run-id", "steps", "--stages", "warehouse,validation")
    assert again.returncode == 0, again.stderr[-3000:]
    manifest = json.loads((runs_dir / "steps" / "manifest.json").read_text())
    assert list(manifest["stages"]) == ["data", "warehouse", "validation"]
    assert manifest["stages"]["validation"]["status"] == "succeeded"
    assert (runs_dir / "steps" / "statistics" / "report.html").is_file()
    assert not (runs_dir / "LATEST").exists()


def test_a_stage_without_its_inputs_fails_clearly(tmp_path):
    runs_dir = tmp_path / "runs"
    completed = _run(runs_dir, "--run-id", "empty", "--stages", "transform")
    assert completed.returncode == EXIT_VERDICT
    assert "run the warehouse stage first" in completed.stderr
    unknown = _run(runs_dir, "--run-id", "empty", "--stages", "tranform")
    assert unknown.returncode == EXIT_USAGE and "unknown stage" in unknown.stderr


def test_a_crash_exits_1_so_that_a_scheduler_retries_it(tmp_path):
    """Not a verdict on the data: here the runs dir cannot be created (a file is in the way)."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    completed = _run(blocker / "runs", "--run-id", "x", "--stages", "data")
    assert completed.returncode == 1, completed.stderr[-3000:]
    assert "RUN FAILED" in completed.stderr


def test_a_run_directory_on_gcs(gcs_bucket):
    """Splits, TFDV statistics (Beam reading and writing gs://), report and manifest on GCS."""
    runs = f"{gcs_bucket}/runs"
    completed = _run(runs, "--run-id", "r1", "--stages", "data,warehouse,validation")
    assert completed.returncode == 0, completed.stderr[-5000:]
    run_dir = f"{runs}/r1"
    manifest = json.loads(storage.read_text(f"{run_dir}/manifest.json"))
    assert manifest["status"] == "in_progress"  # the later stages have not run yet
    assert [s["status"] for s in manifest["stages"].values()] == ["succeeded"] * 3
    assert storage.listdir(run_dir) == ["manifest.json", "splits", "statistics"]  # no staging
    assert storage.subdirs(f"{run_dir}/splits") == ["eval", "test", "train"]
    rows = manifest["rows_per_split"]
    for split in ("train", "eval", "test"):
        stats = load_statistics(f"{run_dir}/statistics/{split}.pb")
        assert stats.datasets[0].num_examples == rows[split] > 0
    assert storage.read_text(f"{run_dir}/statistics/report.html").startswith("<!DOCTYPE html>")
    assert manifest["stages"]["validation"]["report_html"] == f"{run_dir}/statistics/report.html"
