"""The evaluate and push stages with two real exports: a model better overall than the served
one but worse on one slice is not pushed; with the slice gate off it is.

The exports (``slice_models`` in conftest.py) are trained for real on one transform graph: the
served one on data whose labels outside the slice ``company = Sun Taxi`` were scrambled, the
candidate on data whose labels inside it were. Every number the tests check is recomputed with
NumPy (tests/numpy_reference.py) from ``evaluation/predictions.parquet``, and the predictions
themselves are checked against the export's ``serving_default`` called as a client calls it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline import storage
from pipeline.datasets import get_dataset
from pipeline.predict import predict_examples, raw_examples
from pipeline.serving.layout import complete_versions, read_blessing
from tests import numpy_reference as ref
from tests.conftest import PYTHON, REPO_ROOT, SLICE_COMPANY, prepared_run, subprocess_env

pytestmark = pytest.mark.slow


def _predictions(run_dir: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(run_dir / "evaluation" / "predictions.parquet")
    return {name: np.asarray(table.column(name).to_pylist()) for name in table.column_names}


def test_better_overall_but_worse_on_a_slice_is_not_pushed(gated_run):
    manifest, run_dir, base = gated_run["manifest"], gated_run["run_dir"], gated_run["base"]
    rows = _predictions(run_dir)
    labels, company = rows["label"], rows["slice.company"]
    in_slice = company == SLICE_COMPANY
    candidate, served = rows["candidate"], rows["served"]
    # Better overall on the same rows, clearly worse on the slice (NumPy's AUC, not the code's).
    assert ref.auc(labels, candidate) > ref.auc(labels, served) + 0.05
    assert ref.auc(labels[in_slice], candidate[in_slice]) < (
        ref.auc(labels[in_slice], served[in_slice]) - 0.2
    )
    assert in_slice.sum() >= 100  # enough rows for the slice to be gated

    evaluate = manifest["stages"]["evaluate"]
    blessing = evaluate["blessing"]
    assert evaluate["status"] == "succeeded" and not blessing["blessed"]
    assert blessing["baseline_version"] == 1 and blessing["slices"]["served_version"] == 1
    assert f"company={SLICE_COMPANY}" in blessing["slices"]["worse"]
    assert f"company={SLICE_COMPANY} auc" in blessing["reason"]
    # The overall rule alone would have blessed it: better than the served version's value.
    assert blessing["value"] > blessing["baseline_value"] + blessing["tolerance"]

    push = manifest["stages"]["push"]
    assert push["status"] == "succeeded" and push["blessed"] is False
    assert push["version"] is None and manifest["pushed"] is False
    assert complete_versions(base) == [1]  # the served version stays


def test_the_slice_numbers_are_those_of_the_predictions(gated_run):
    run_dir = gated_run["run_dir"]
    rows = _predictions(run_dir)
    evaluation = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    labels = rows["label"]
    for role in ("candidate", "served"):
        overall = evaluation["models"][role]["metrics"]
        assert overall["auc"] == pytest.approx(ref.auc(labels, rows[role]), abs=1e-6)
        assert overall["examples"] == len(labels) == evaluation["rows"]
    compared = {(r["slice"], r["key"]): r for r in evaluation["blessing"]["slices"]["keys"]}
    for one in evaluation["slices"]:
        keys = rows[f"slice.{one['name']}"]
        assert sum(k["examples"] for k in one["keys"]) == len(labels)
        for key in one["keys"]:
            mask = keys == key["key"]
            assert key["examples"] == mask.sum()
            for role in ("candidate", "served"):
                expected = ref.auc(labels[mask], rows[role][mask])
                got = key[role]["auc"]
                assert (np.isnan(got) and np.isnan(expected)) or got == pytest.approx(
                    expected, abs=1e-6
                ), (one["name"], key["key"], role)
            row = compared[(one["name"], key["key"])]
            gated = key["examples"] >= one["min_examples"] and not np.isnan(key["candidate"]["auc"])
            assert (row["status"] in ("ok", "worse")) == gated
            if gated:
                worse = key["served"]["auc"] - key["candidate"]["auc"] > 0.05
                assert (row["status"] == "worse") == worse, row


def test_predictions_are_what_serving_answers(gated_run, slice_models):
    """The first rows through the export's serving_default as pipeline.predict sends them."""
    rows = _predictions(gated_run["run_dir"])
    dataset = get_dataset("taxi")
    split = gated_run["run_dir"] / "splits" / "eval"
    examples, _ = raw_examples(dataset, split, 64)
    for role in ("candidate", "served"):
        served = predict_examples(slice_models[role][1].export_dir, examples)["probabilities"]
        assert rows[role][:64] == pytest.approx(served, rel=1e-5, abs=1e-7)
    # The same numbers as the training stage's, which read the transformed eval split.
    evaluation = gated_run["manifest"]["stages"]["evaluate"]["models"]["candidate"]["metrics"]
    trained = slice_models["candidate"][0].metrics["eval"]
    assert evaluation["auc"] == pytest.approx(trained["auc"], abs=1e-4)
    assert evaluation["log_loss"] == pytest.approx(trained["log_loss"], abs=1e-4)


def test_the_evaluation_is_recorded_with_digests(gated_run):
    manifest, run_dir = gated_run["manifest"], gated_run["run_dir"]
    evaluate = manifest["stages"]["evaluate"]
    for name in ("metrics.json", "predictions.parquet", "report.html"):
        path = run_dir / "evaluation" / name
        assert manifest["artifacts"][f"evaluation/{name}"] == {
            "path": str(path),
            "sha256": storage.sha256(path),
        }
    assert evaluate["report_html"] == str(run_dir / "evaluation" / "report.html")
    assert sorted(p.name for p in (run_dir / "evaluation").iterdir()) == [
        "metrics.json", "predictions.parquet", "report.html",
    ]  # fmt: skip


def test_with_the_slice_gate_off_the_candidate_is_pushed(gated_run, slice_models):
    """The command line: ``--no-slice-gate`` reports the slices, and the overall rule blesses."""
    runs = gated_run["root"] / "runs"
    prepared_run(runs / "ungated", slice_models, "candidate", "ungated")
    completed = subprocess.run(
        [PYTHON, "-m", "pipeline.run", "--runs-dir", str(runs), "--run-id", "ungated",
         "--stages", "evaluate,push", "--push-base", str(gated_run["base"]),
         "--no-slice-gate", "--json"],
        capture_output=True, text=True, cwd=REPO_ROOT, env=subprocess_env(), timeout=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-4000:]
    summary = json.loads(completed.stdout)
    assert summary["push"]["blessed"] is True and summary["push"]["version"] == 2
    assert summary["evaluation"]["slices"]["enabled"] is False
    assert f"company={SLICE_COMPANY}" in summary["evaluation"]["slices"]["worse"]
    assert summary["reports"] == {"model": str(runs / "ungated" / "evaluation" / "report.html")}
    blessing = read_blessing(gated_run["base"] / "2")
    assert blessing["blessed"] and blessing["slices"]["enabled"] is False
    assert f"company={SLICE_COMPANY}" in blessing["slices"]["worse"]
    failing = len(blessing["slices"]["worse"])
    assert f"the slice gate is off; {failing} would fail it" in blessing["reason"]
    assert complete_versions(gated_run["base"]) == [1, 2]
