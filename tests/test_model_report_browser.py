"""The model report of the slice-gated run as a reader sees it: rendered by headless Chromium.

The report is the one the evaluate stage wrote for the candidate of ``slice_models`` against the
served version (binary label, so ROC, precision-recall, reliability and confusion matrices). The
verdict must come first; every chart's numbers, read from the DOM Chromium built, must be those
the test computes itself with NumPy from ``predictions.parquet``; the slice table must flag the
slice that blocked the push. Screenshots are written (``REPORT_SCREENSHOTS=DIR`` keeps them).
The regression and multi-class reports are checked in test_any_table.py.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

from pipeline import charts
from tests import numpy_reference as ref
from tests.conftest import SLICE_COMPANY
from tests.model_report_dom import FULL_PAGE, WINDOW, RenderedReport, assert_self_contained

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(gated_run, tmp_path_factory) -> RenderedReport:
    return RenderedReport(
        gated_run["run_dir"] / "evaluation", tmp_path_factory.mktemp("profile-model-report")
    )


def test_the_verdict_comes_first_and_names_the_slice(report):
    assert report.parsed.first_after_title == "p.verdict refused"
    assert report.parsed.verdict["data-blessed"] == "false"
    text = " ".join(report.parsed.verdict_text.split())
    assert text.startswith("Not blessed: eval auc")
    assert f"company={SLICE_COMPANY} auc" in text
    assert "Nothing is pushed: version 1 stays served." in text
    assert_self_contained(report.html)


def test_the_roc_curves_are_numpys(report):
    labels = report.rows["label"]
    figure = report.figure("roc")
    assert figure["svg"]["data-chart"] == "line" and figure["legend"] == ["candidate", "served"]
    for role in ("candidate", "served"):
        drawn = report.points(figure, role)
        every = ref.roc_points(labels, report.rows[role])
        # Each drawn point is one a threshold gives, from (0, 0) to (1, 1) ...
        distance = np.abs(drawn[:, None, :] - every[None, :, :]).max(axis=2).min(axis=1)
        assert distance.max() < 1e-9
        assert drawn[0].tolist() == [0.0, 0.0] and drawn[-1].tolist() == [1.0, 1.0]
        # ... and the points left out lie on the drawn segments: the area is the AUC.
        assert ref.trapezoid_area(drawn) == pytest.approx(ref.auc(labels, report.rows[role]))


def test_the_precision_recall_curves_are_numpys(report):
    labels = report.rows["label"].astype(bool)
    figure = report.figure("precision_recall")
    for role in ("candidate", "served"):
        drawn = report.points(figure, role)
        scores = report.rows[role]
        achievable = np.array(
            [[(scores[labels] >= t).mean(), labels[scores >= t].mean()] for t in np.unique(scores)]
        )
        assert drawn[0].tolist() == [0.0, 1.0]  # the curve starts at recall 0, precision 1
        distance = np.abs(drawn[1:, None, :] - achievable[None, :, :]).max(axis=2).min(axis=1)
        assert distance.max() < 1e-9
        assert np.all(np.diff(drawn[:, 0]) >= 0)  # by rising recall
    (share,) = [r for r in figure["references"] if "data-value" in r]
    assert float(share["data-value"]) == pytest.approx(labels.mean())


def test_the_reliability_diagram_and_its_bin_counts_are_numpys(report):
    labels = report.rows["label"]
    curve, counts = report.figure("calibration"), report.figure("calibration_counts")
    drawn_counts = report.bars(counts)
    for role in ("candidate", "served"):
        rows, means, shares = ref.reliability_bins(labels, report.rows[role])
        bars = sorted(
            (m for m in counts["marks"] if m["data-series"] == role),
            key=lambda m: float(m["data-low"]),
        )
        assert [float(m["data-value"]) for m in bars] == rows
        assert sum(rows) == len(labels)
        expected = [(m, s) for m, s in zip(means, shares, strict=True) if m is not None]
        assert report.points(curve, role) == pytest.approx(np.array(expected), abs=1e-9)
    assert len(drawn_counts) == 2 * 10


def test_the_confusion_matrices_are_numpys(report):
    labels = report.rows["label"]
    for role in ("candidate", "served"):
        figure = report.figure("confusion_matrix", model=role)
        assert figure["svg"]["data-chart"] == "heatmap"
        expected = ref.confusion(labels, report.rows[role] >= 0.5, 2)
        assert report.cells(figure) == {
            (str(a), str(p)): float(expected[a, p]) for a in range(2) for p in range(2)
        }


def test_the_metrics_table_shows_every_model_on_the_same_rows(report):
    labels = report.rows["label"]
    rows = report.metrics_rows()
    # No wide-only row: the fixture's models were trained without that baseline.
    assert [model for model, _ in rows] == [
        "candidate", "candidate", "majority baseline", "served version 1",
    ]  # fmt: skip
    served = rows[("served version 1", "serving_default on the same rows")]
    candidate = rows[("candidate", "serving_default on the raw eval rows")]
    assert served[0] == f"{ref.auc(labels, report.rows['served']):.4f}"
    assert candidate[0] == f"{ref.auc(labels, report.rows['candidate']):.4f}"
    assert served[-1] == candidate[-1] == f"{len(labels):,}"


def test_the_slice_table_flags_the_slice_that_blocked_the_push(report):
    labels = report.rows["label"]
    keys = report.rows["slice.company"]
    table = report.parsed.tables["company"]
    header, *rows = [cells for _, cells in table]
    assert header == ["key", "rows", "auc candidate", "auc served", "difference", "status"]
    by_key = {attrs["data-key"]: (attrs, cells) for attrs, cells in table[1:]}
    assert len(rows) == len(by_key)
    for key, (attrs, cells) in by_key.items():
        mask = keys == key
        candidate = ref.auc(labels[mask], report.rows["candidate"][mask])
        served = ref.auc(labels[mask], report.rows["served"][mask])
        assert cells[1] == f"{mask.sum():,}"
        assert cells[2] == f"{candidate:.4f}" and cells[3] == f"{served:.4f}"
        flagged = served - candidate > 0.05
        assert (attrs["class"] == "worse") == flagged, key
        assert (cells[5] == "worse than served: flagged") == flagged
    assert by_key[SLICE_COMPANY][0]["class"] == "worse"
    # The slice's chart: both models' AUC per company, the failing candidate bar in red.
    chart = report.figure("slice", slice="company")
    bars = report.bars(chart)
    for key in by_key:
        mask = keys == key
        for role in ("candidate", "served"):
            expected = ref.auc(labels[mask], report.rows[role][mask])
            assert bars[(role, key)] == pytest.approx(expected, abs=1e-6)
    (failing,) = [
        m for m in chart["marks"] if m["data-series"] == "candidate" and m["fill"] == charts.ALERT
    ]
    assert failing["data-category"] == SLICE_COMPANY


def test_slices_too_small_to_gate_are_listed_apart(report):
    """Each hour has about 50 eval rows: below the slice's 100, reported but not gated."""
    hours = report.rows["slice.trip_start_hour"]
    assert all((hours == h).sum() < 100 for h in np.unique(hours))
    rows = report.parsed.tables["trip_start_hour"]
    statuses = {attrs["data-status"] for attrs, _ in rows[1:]}
    assert statuses <= {"too few rows", "undefined"}
    assert len(rows) - 1 == len(np.unique(hours))
    assert "keys with fewer than 100 rows (not gated)" in report.dom


def test_report_screenshots(report, tmp_path):
    top, full = report.screenshots(tmp_path, "model-report")
    for path, window in ((top, WINDOW), (full, FULL_PAGE)):
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
        assert struct.unpack(">II", data[16:24]) == window
