"""The HTML validation report as a reader sees it: rendered by headless Chromium.

The page is built from real TFDV statistics of small taxi-shaped splits with injected faults, so
it holds schema, skew and drift findings. Chromium must be installed (Debian: ``chromium``); when
it is missing this test fails rather than skips, so CI cannot silently stop checking the page.

The charts are checked in the DOM Chromium built: the numbers each bar carries must be those the
test computes on its own from the statistics protos and the schema. Screenshots (the top of the
page, and the whole page on linear and log scales) are written; ``REPORT_SCREENSHOTS=DIR`` keeps
them.
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import make_rows
from tensorflow_data_validation.statistics.stats_impl import generate_statistics_in_memory

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline import charts
from pipeline.arrow_io import to_list_batch
from pipeline.datasets import get_dataset
from pipeline.validation.report import write_html
from pipeline.validation.schema import load_schema
from pipeline.validation.splits import validate_splits
from pipeline.validation.stats import stats_options

WINDOW = (1400, 2000)
FULL_PAGE = (1400, 9000)  # the whole page of the fixture's three splits
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
    return page, reports, stats


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


def test_report_renders_in_chromium(report_page, report_dom, tmp_path):
    page, reports, _ = report_page
    expected = {(a.feature, a.kind) for r in reports.values() for a in r.anomalies}
    assert ("payment_type", "ENUM_TYPE_UNEXPECTED_STRING_VALUES") in expected
    assert ("fare", "FLOAT_TYPE_BIG_FLOAT") in expected
    assert ("fare", "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH") in expected

    dom = report_dom
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


def _screenshot(page: Path, path: Path, profile: Path, window: tuple[int, int]) -> bytes:
    _run_chromium(page, profile, f"--window-size={window[0]},{window[1]}", f"--screenshot={path}")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert struct.unpack(">II", data[16:24]) == window
    return data


def test_report_screenshots(report_page, tmp_path):
    """The top of the page, then the whole page with linear and with log scales."""
    page, _, _ = report_page
    log_page = tmp_path / "validation-log.html"
    log_page.write_text(page.read_text().replace('id="log-scale">', 'id="log-scale" checked>', 1))
    shots = {
        "report.png": (page, WINDOW),
        "report-full.png": (page, FULL_PAGE),
        "report-full-log.png": (log_page, FULL_PAGE),
    }
    pictures = {
        name: _screenshot(source, tmp_path / name, tmp_path / f"profile-{name}", window)
        for name, (source, window) in shots.items()
    }
    # The log page differs from the linear one only in what the checkbox shows.
    assert pictures["report-full.png"] != pictures["report-full-log.png"]
    if keep := os.environ.get("REPORT_SCREENSHOTS"):
        Path(keep).mkdir(parents=True, exist_ok=True)
        for name in shots:
            shutil.copyfile(tmp_path / name, Path(keep) / name)


# ---- charts: the numbers drawn, checked against the statistics protos --------------------------


class _Charts(HTMLParser):
    """Every chart of the page by its ``<figure>``'s data attributes, with the marks it draws."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[dict] = []
        self._figure: dict | None = None
        self._title: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "figure":
            self._figure = {
                "data": {k[5:]: v for k, v in attrs.items() if k.startswith("data-")},
                "svg": {},
                "marks": [],
                "references": [],
                "legend": [],
                "title": "",
            }
            self.figures.append(self._figure)
        elif self._figure is None:
            return
        elif tag == "svg":
            self._figure["svg"] = attrs
        elif tag == "title" and not self._figure["title"]:
            self._title = []
        elif "class" in attrs and attrs["class"] == "mark":
            self._figure["marks"].append(attrs)
        elif attrs.get("class") == "reference":
            self._figure["references"].append(attrs)
        elif "data-legend" in attrs:
            self._figure["legend"].append(attrs["data-legend"])

    def handle_endtag(self, tag):
        if tag == "figure":
            self._figure = None
        elif tag == "title" and self._title is not None:
            self._figure["title"] = "".join(self._title)
            self._title = None

    def handle_data(self, data):
        if self._title is not None:
            self._title.append(data)

    def find(self, scale: str = "linear", **data: str) -> list[dict]:
        return [
            f
            for f in self.figures
            if f["data"].get("scale", scale) == scale
            and all(f["data"].get(k) == v for k, v in data.items())
        ]


@pytest.fixture(scope="module")
def report_dom(report_page, tmp_path_factory) -> str:
    page = report_page[0]
    return _run_chromium(page, tmp_path_factory.mktemp("profile-dom"), "--dump-dom").stdout


@pytest.fixture(scope="module")
def chart_dom(report_dom) -> _Charts:
    parsed = _Charts()
    parsed.feed(report_dom)
    return parsed


def _features(stats) -> dict[str, dict]:
    return {
        split: {f.path.step[0]: f for f in s.datasets[0].features} for split, s in stats.items()
    }


def _cdf(histogram, x: float) -> float:
    """Fraction of a quantile histogram's values <= x (uniform inside a bucket, point masses
    for zero-width buckets): the test's own reading of TFDV's histogram."""
    total = below = 0.0
    for bucket in histogram.buckets:
        total += bucket.sample_count
        if bucket.high_value <= x:
            below += bucket.sample_count
        elif bucket.low_value < x:
            width = bucket.high_value - bucket.low_value
            below += bucket.sample_count * (x - bucket.low_value) / width
    return below / total


def _quantiles(feature):
    (histogram,) = [h for h in feature.num_stats.histograms if h.type == h.QUANTILES]
    return histogram


def _numbers(marks, key: str = "value") -> dict[tuple[str, str], float | None]:
    return {
        (m["data-series"], m["data-category"]): float(m[f"data-{key}"])
        if f"data-{key}" in m
        else None
        for m in marks
    }


def test_numeric_charts_draw_each_splits_share_per_common_bin(report_page, chart_dom):
    per_split = _features(report_page[2])
    numeric = [n for n, f in per_split["train"].items() if f.HasField("num_stats")]
    assert "fare" in numeric and "trip_miles" in numeric
    for name in numeric:
        (figure,) = chart_dom.find(figure="distribution", feature=name)
        assert figure["svg"]["data-chart"] == "histogram" and name in figure["title"]
        train_edges = sorted(
            {b.high_value for b in _quantiles(per_split["train"][name]).buckets[:-1]}
        )
        splits = [s for s in per_split if name in per_split[s]]
        assert figure["legend"] == splits
        for split in splits:
            bars = sorted(
                (m for m in figure["marks"] if m["data-series"] == split),
                key=lambda m: float(m["data-low"]),
            )
            lows = [float(m["data-low"]) for m in bars]
            highs = [float(m["data-high"]) for m in bars]
            assert lows[1:] == highs[:-1]  # contiguous common bins
            assert set(highs[:-1]) <= set(train_edges)  # cut at train's quantiles
            histogram = _quantiles(per_split[split][name])
            for i, bar in enumerate(bars):
                below = 0.0 if i == 0 else _cdf(histogram, lows[i])
                above = 1.0 if i == len(bars) - 1 else _cdf(histogram, highs[i])
                assert float(bar["data-value"]) == pytest.approx(above - below, abs=1e-9), (
                    name,
                    split,
                    bar,
                )
    # The faults are where the bars say: eval's fares (cents) all sit in train's top bin.
    (fare,) = chart_dom.find(figure="distribution", feature="fare")
    eval_bars = [m for m in fare["marks"] if m["data-series"] == "eval"]
    top = max(eval_bars, key=lambda m: float(m["data-high"]))
    assert float(top["data-value"]) == pytest.approx(1.0)
    assert float(top["data-high"]) == max(f["fare"].num_stats.max for f in per_split.values())


def test_string_charts_draw_each_splits_share_per_value(report_page, chart_dom):
    per_split = _features(report_page[2])
    strings = [n for n, f in per_split["train"].items() if f.HasField("string_stats")]
    assert set(strings) == {"payment_type", "company"}
    for name in strings:
        (figure,) = chart_dom.find(figure="distribution", feature=name)
        assert figure["svg"]["data-chart"] == "bar"
        drawn = _numbers(figure["marks"])
        for split, features in per_split.items():
            s = features[name].string_stats
            counts = {b.label: b.sample_count for b in s.rank_histogram.buckets}
            assert len(counts) == s.unique  # every value listed: the shares are exact
            shown = [c for (series, c) in drawn if series == split]
            for category in shown:
                expected = counts.get(category, 0) / s.common_stats.tot_num_values
                if category == "(all other values)":
                    expected = (
                        1 - sum(counts.get(c, 0) for c in shown) / s.common_stats.tot_num_values
                    )
                assert drawn[(split, category)] == pytest.approx(expected, abs=1e-9)
            # The most frequent values of every split are drawn.
            top = sorted(counts, key=counts.get, reverse=True)[:3]
            assert set(top) <= set(shown)
    payment = _numbers(chart_dom.find(figure="distribution", feature="payment_type")[0]["marks"])
    assert payment[("serving", "Bitcoin")] == pytest.approx(0.1)
    assert payment[("train", "Bitcoin")] == 0.0


def test_missing_charts_draw_the_share_of_examples_without_a_value(report_page, chart_dom):
    per_split = _features(report_page[2])
    names = list(per_split["train"])
    for name in names:
        (figure,) = chart_dom.find(figure="missing", feature=name)
        drawn = _numbers(figure["marks"])
        for split, features in per_split.items():
            if name not in features:
                assert drawn[(split, "missing")] is None  # absent, not "100% missing"
                continue
            common = getattr(features[name], features[name].WhichOneof("stats")).common_stats
            total = common.num_missing + common.num_non_missing
            assert drawn[(split, "missing")] == pytest.approx(common.num_missing / total)
    assert "tips" not in per_split["serving"]
    census = _numbers(chart_dom.find(figure="missing", feature="pickup_census_tract")[0]["marks"])
    assert census[("train", "missing")] > 0.8


def _infinity_norm(a, b) -> float:
    counts = [
        {x.label: x.sample_count for x in s.string_stats.rank_histogram.buckets} for s in (a, b)
    ]
    totals = [sum(c.values()) for c in counts]
    labels = set(counts[0]) | set(counts[1])
    return max(
        abs(counts[0].get(v, 0) / totals[0] - counts[1].get(v, 0) / totals[1]) for v in labels
    )


def _jensen_shannon(baseline, candidate) -> float:
    edges = sorted({b.high_value for b in baseline.buckets[:-1]})

    def masses(histogram):
        cdf = [0.0, *(_cdf(histogram, e) for e in edges), 1.0]
        return np.diff(cdf)

    p, q = masses(baseline), masses(candidate)
    m = (p + q) / 2

    def kl(x) -> float:
        return float(sum(xi * math.log2(xi / mi) for xi, mi in zip(x, m, strict=True) if xi > 0))

    return (kl(p) + kl(q)) / 2


def test_distance_charts_draw_each_distance_against_its_schema_threshold(report_page, chart_dom):
    per_split = _features(report_page[2])
    schema = {f.name: f for f in load_schema(get_dataset("taxi")).feature}
    checks = {"eval": ("train", "eval", "drift_comparator"),
              "train vs serving": ("train", "serving", "skew_comparator")}  # fmt: skip
    for report, (base, candidate, comparator) in checks.items():
        (figure,) = chart_dom.find(figure="distances", report=report)
        drawn = _numbers(figure["marks"])
        thresholds = {r["data-category"]: float(r["data-value"]) for r in figure["references"]}
        assert len(drawn) == len(thresholds) >= 5
        for (_, category), value in drawn.items():
            feature, kind = category.split(" · ")
            spec = getattr(schema[feature], comparator)
            if kind == "JSD":
                expected_threshold = spec.jensen_shannon_divergence.threshold
                expected = _jensen_shannon(
                    _quantiles(per_split[base][feature]), _quantiles(per_split[candidate][feature])
                )
            else:
                assert kind == "L∞"
                expected_threshold = spec.infinity_norm.threshold
                expected = _infinity_norm(per_split[base][feature], per_split[candidate][feature])
            assert value == pytest.approx(expected, abs=1e-6), category
            assert thresholds[category] == pytest.approx(expected_threshold)
            bar = next(m for m in figure["marks"] if m["data-category"] == category)
            assert (bar["fill"] == charts.ALERT) == (value > expected_threshold), category
    eval_fare = _numbers(chart_dom.find(figure="distances", report="eval")[0]["marks"])
    assert eval_fare[("eval", "fare · JSD")] > 0.5  # the fault in cents is far above 0.03


def test_every_chart_exists_on_both_scales_with_a_title(report_page, chart_dom):
    _, reports, stats = report_page
    features = {name for split in _features(stats).values() for name in split}
    linear = [f for f in chart_dom.figures if f["data"].get("scale") == "linear"]
    log = [f for f in chart_dom.figures if f["data"].get("scale") == "log"]
    compared = [label for label, report in reports.items() if report.measurements]
    assert len(linear) == len(log) == len(features) + len(compared)
    assert {f["data"]["feature"] for f in chart_dom.find(figure="missing")} == features
    for a, b in zip(linear, log, strict=True):
        assert {k: v for k, v in a["data"].items() if k != "scale"} == {
            k: v for k, v in b["data"].items() if k != "scale"
        }
        assert a["svg"]["data-scale"] == "linear" and b["svg"]["data-scale"] == "log"
        assert _numbers(a["marks"]) == _numbers(b["marks"])
    for figure in chart_dom.figures:
        assert figure["title"] and figure["svg"]["role"] == "img"
        assert figure["svg"]["aria-labelledby"]
