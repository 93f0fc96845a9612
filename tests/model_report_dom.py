"""Reading a model report back from the DOM headless Chromium builds, for the tests.

The page is rendered by Chromium (``--dump-dom``, the helpers of test_report_browser.py); what
its charts draw is read from the marks' data attributes and its tables from their cells, so the
tests compare them with numbers they compute themselves from ``predictions.parquet``.
"""

from __future__ import annotations

import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from tests.test_report_browser import _Charts, _run_chromium, _screenshot

WINDOW = (1400, 2000)
FULL_PAGE = (1400, 4200)


class _Rows(HTMLParser):
    """Every ``<tr>`` with its attributes and cell texts, and the page's first paragraph."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[dict, list[str]]] = []
        self.tables: dict[str, list[tuple[dict, list[str]]]] = {}
        self.verdict: dict | None = None
        self.verdict_text = ""
        self.first_after_title: str | None = None
        self._seen_h1 = False
        self._in_verdict = False
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._row: tuple[dict, list[str]] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "h1":
            self._seen_h1 = True
        elif self._seen_h1 and self.first_after_title is None and tag not in ("html", "body"):
            self.first_after_title = f"{tag}.{attrs.get('class', '')}"
        if tag == "p" and "verdict" in attrs.get("class", ""):
            self.verdict, self._in_verdict = attrs, True
        elif tag == "table":
            self._table = attrs.get("data-slice-table", "")
            self.tables.setdefault(self._table, [])
        elif tag == "tr":
            self._row = (attrs, [])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "p":
            self._in_verdict = False
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row[1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self.tables[self._table or ""].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._in_verdict:
            self.verdict_text += data
        if self._cell is not None:
            self._cell.append(data)


class RenderedReport:
    """A model report as Chromium rendered it, with the evaluation it was made from."""

    def __init__(self, evaluation_dir: Path, profile: Path):
        self.page = evaluation_dir / "report.html"
        self.html = self.page.read_text()
        self.dom = _run_chromium(self.page, profile, "--dump-dom").stdout
        self.charts = _Charts()
        self.charts.feed(self.dom)
        self.parsed = _Rows()
        self.parsed.feed(self.dom)
        self.evaluation = json.loads((evaluation_dir / "metrics.json").read_text())
        table = pq.read_table(evaluation_dir / "predictions.parquet")
        self.rows = {
            name: np.asarray(table.column(name).to_pylist()) for name in table.column_names
        }

    def figure(self, name: str, **data: str) -> dict:
        (found,) = [
            f
            for f in self.charts.figures
            if f["data"].get("figure") == name
            and all(f["data"].get(k) == v for k, v in data.items())
        ]
        return found

    def points(self, figure: dict, series: str) -> np.ndarray:
        (mark,) = [m for m in figure["marks"] if m.get("data-series") == series]
        pairs = [p.split(",") for p in mark["data-points"].split()]
        return np.array([[float(x), float(y)] for x, y in pairs]).reshape(-1, 2)

    def bars(self, figure: dict) -> dict[tuple[str, str], float | None]:
        return {
            (m["data-series"], m["data-category"]): float(m["data-value"])
            if "data-value" in m
            else None
            for m in figure["marks"]
        }

    def cells(self, figure: dict) -> dict[tuple[str, str], float]:
        return {(m["data-row"], m["data-column"]): float(m["data-value"]) for m in figure["marks"]}

    def metrics_rows(self) -> dict[tuple[str, str], list[str]]:
        """The metrics table: (model, computed by) -> its cells."""
        return {
            (cells[0], cells[1]): cells[2:]
            for attrs, cells in self.parsed.tables[""]
            if len(cells) > 3 and cells[0] != "model"
        }

    def screenshots(self, directory: Path, name: str) -> list[Path]:
        """The top of the page and the whole page; ``REPORT_SCREENSHOTS=DIR`` keeps them."""
        shots = []
        for suffix, window in (("", WINDOW), ("-full", FULL_PAGE)):
            path = directory / f"{name}{suffix}.png"
            _screenshot(self.page, path, directory / f"profile-{name}{suffix}", window)
            shots.append(path)
        if keep := os.environ.get("REPORT_SCREENSHOTS"):
            Path(keep).mkdir(parents=True, exist_ok=True)
            for path in shots:
                shutil.copyfile(path, Path(keep) / path.name)
        return shots


def assert_self_contained(html: str) -> None:
    """Opens offline: no script, no stylesheet or image fetched from anywhere."""
    lowered = html.lower()
    assert "<script" not in lowered and "<link" not in lowered and "<img" not in lowered
    assert "http://" not in lowered and "https://" not in lowered and "url(" not in lowered
