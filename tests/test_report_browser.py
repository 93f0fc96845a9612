"""The HTML validation report as a reader sees it: rendered by headless Chromium.

The page is built from real TFDV statistics of small taxi-shaped splits with injected faults, so
it holds schema, skew and drift findings. Chromium must be installed (Debian: ``chromium``); when
it is missing this test fails rather than skips, so CI cannot silently stop checking the page.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import make_rows
from tensorflow_data_validation.statistics.stats_impl import generate_statistics_in_memory

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline.arrow_io import to_list_batch
from pipeline.datasets import get_dataset
from pipeline.validation.report import write_html
from pipeline.validation.schema import load_schema
from pipeline.validation.splits import validate_splits
from pipeline.validation.stats import stats_options

WINDOW = (1400, 2000)
TIMEOUT_SECONDS = 120


def _chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.fail(
            "chromium is not installed (Debian: apt-get install -y chromium); "
            "the HTML report cannot be checked in a browser"
        )
    return path


def _run_chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        *args,
        page.resolve().as_uri(),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False
    )
    assert result.returncode == 0, f"{command}\n{result.stderr[-4000:]}"
    return result


def _stats(table: pa.Table):
    return generate_statistics_in_memory(to_list_batch(table), stats_options())


def _with_payment(table: pa.Table, every: int, value: str) -> pa.Table:
    payments = table.column("payment_type").to_pylist()
    changed = [value if i % every == 0 else p for i, p in enumerate(payments)]
    index = table.schema.get_field_index("payment_type")
    return table.set_column(index, "payment_type", pa.array(changed, pa.string()))


@pytest.fixture(scope="module")
def report_page(tmp_path_factory):
    """A report with anomalies: a new payment type and a fare shift in serving, fare in cents."""
    train = make_rows(3000, seed=1)
    eval_ = make_rows(600, seed=2)
    eval_ = eval_.set_column(
        eval_.schema.get_field_index("fare"), "fare", pc.multiply(eval_.column("fare"), 100.0)
    )
    serving = _with_payment(make_rows(600, seed=3, fare_scale=1.5), 10, "Bitcoin").drop(["tips"])
    stats = {"train": _stats(train), "eval": _stats(eval_), "serving": _stats(serving)}
    reports = validate_splits(stats, load_schema(get_dataset("taxi")))
    page = Path(
        write_html(
            tmp_path_factory.mktemp("report") / "validation.html",
            stats,
            reports,
            "Validation report <browser check>",
        )
    )
    return page, reports


class _Tables(HTMLParser):
    """Rows of cell texts per table, keyed by the text of the ``h2`` before the table."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._heading = ""
        self._in_h2 = False
        self._cell: list[str] | None = None
        self._row: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "h2":
            self._in_h2, self._heading = True, ""
        elif tag == "table":
            self.tables[self._heading] = []
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._heading].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._in_h2:
            self._heading += data
        elif self._cell is not None:
            self._cell.append(data)


def test_report_renders_in_chromium(report_page, tmp_path):
    page, reports = report_page
    expected = {(a.feature, a.kind) for r in reports.values() for a in r.anomalies}
    assert ("payment_type", "ENUM_TYPE_UNEXPECTED_STRING_VALUES") in expected
    assert ("fare", "FLOAT_TYPE_BIG_FLOAT") in expected
    assert ("fare", "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH") in expected

    dom = _run_chromium(page, tmp_path / "profile-dom", "--dump-dom").stdout
    # The browser's DOM, not the file: the parser inserted the tbody the page leaves out.
    assert "<tbody>" in dom and "<tbody>" not in page.read_text()
    tables = _Tables()
    tables.feed(dom)
    header, *rows = tables.tables["Anomalies"]
    assert header[:5] == ["report", "severity", "check", "feature", "anomaly"]
    assert {(row[3], row[4]) for row in rows} == expected
    severities = [row[1] for row in rows]
    assert severities == sorted(severities)  # BLOCKING before WARNING
    blocking = sum(len(r.blocking) for r in reports.values())
    assert f"Blocked: {blocking} blocking anomalies" in " ".join(dom.split())
    summary = {row[0]: row[2] for row in tables.tables["Summary"][1:]}
    assert summary == {label: "passed" if r.passed else "blocked" for label, r in reports.items()}

    screenshot = tmp_path / "report.png"
    _run_chromium(page, tmp_path / "profile-png", f"--screenshot={screenshot}")
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == WINDOW
    if keep := os.environ.get("REPORT_SCREENSHOT"):
        shutil.copyfile(screenshot, keep)
