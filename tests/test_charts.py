"""The SVG chart primitives: well-formed, accessible, and marks that carry what they draw."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from pipeline import charts

SVG = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    assert "http" not in svg  # inline in HTML: no namespace URL, nothing that could be fetched
    root = ET.fromstring(charts.standalone(svg))  # well-formed XML, or this raises
    assert root.tag == f"{SVG}svg" and root.get("role") == "img"
    ids = {e.get("id") for e in root.iter() if e.get("id")}
    assert set(root.get("aria-labelledby").split()) <= ids
    return root


def _marks(root: ET.Element) -> list[ET.Element]:
    return [e for e in root.iter() if e.get("class") == "mark"]


def test_bar_chart_marks_carry_series_category_and_value():
    svg = charts.bar_chart(
        ["Cash", "Credit <Card> & co"],
        [charts.Series("train", [0.5, 0.25]), charts.Series("eval", [0.4, None])],
        title='Payment "types"',
        description="shares",
    )
    root = _parse(svg)
    assert root.find(f"{SVG}title").text == 'Payment "types"'
    assert root.find(f"{SVG}desc").text == "shares"
    marks = {(m.get("data-series"), m.get("data-category")): m for m in _marks(root)}
    assert set(marks) == {
        ("train", "Cash"),
        ("train", "Credit <Card> & co"),
        ("eval", "Cash"),
        ("eval", "Credit <Card> & co"),
    }
    assert float(marks[("train", "Cash")].get("data-value")) == 0.5
    unknown = marks[("eval", "Credit <Card> & co")]
    assert unknown.tag == f"{SVG}g" and unknown.get("data-unknown") == "1"
    # Vertical bars: heights proportional to the values on a linear axis from 0.
    train_cash = float(marks[("train", "Cash")].get("height"))
    train_card = float(marks[("train", "Credit <Card> & co")].get("height"))
    assert train_cash == pytest.approx(2 * train_card, rel=1e-3)
    legend = [e.get("data-legend") for e in root.iter() if e.get("data-legend")]
    assert legend == ["train", "eval"]


def test_horizontal_bars_with_thresholds_and_highlight():
    svg = charts.bar_chart(
        ["fare · JSD", "company · L∞"],
        [charts.Series("eval", [0.5, 0.01])],
        title="distances",
        horizontal=True,
        references=[0.03, 0.15],
        highlight=lambda _series, _category, value: value > 0.03,
        value_labels=True,
    )
    root = _parse(svg)
    marks = {m.get("data-category"): m for m in _marks(root)}
    assert marks["fare · JSD"].get("fill") == charts.ALERT
    assert marks["company · L∞"].get("fill") != charts.ALERT
    references = {
        r.get("data-category"): float(r.get("data-value"))
        for r in root.iter()
        if r.get("class") == "reference"
    }
    assert references == {"fare · JSD": 0.03, "company · L∞": 0.15}
    widths = [float(marks[c].get("width")) for c in ("fare · JSD", "company · L∞")]
    assert widths[0] == pytest.approx(50 * widths[1], rel=1e-3)
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "0.5" in texts and "0.01" in texts


def test_log_scale_leaves_out_what_it_cannot_draw():
    svg = charts.bar_chart(
        ["a", "b", "c"], [charts.Series("s", [0.001, 1.0, 0.0])], title="t", scale="log"
    )
    root = _parse(svg)
    assert root.get("data-scale") == "log"
    marks = {m.get("data-category"): m for m in _marks(root)}
    assert marks["c"].get("data-off-scale") == "1" and marks["c"].get("data-value") == "0.0"
    heights = [float(marks[c].get("height")) for c in ("a", "b")]
    assert 0 <= heights[0] < heights[1]
    with pytest.raises(ValueError, match="scale"):
        charts.bar_chart(["a"], [charts.Series("s", [1.0])], title="t", scale="sqrt")


def test_histogram_marks_carry_their_bin_edges():
    edges = [0.0, 1.0, 5.0, 700.0]
    svg = charts.histogram(
        edges,
        [charts.Series("train", [0.3, 0.3, 0.4]), charts.Series("eval", [0.0, 0.1, 0.9])],
        title="fare",
    )
    root = _parse(svg)
    assert root.get("data-chart") == "histogram"
    bins = {
        (m.get("data-series"), float(m.get("data-low")), float(m.get("data-high"))): float(
            m.get("data-value")
        )
        for m in _marks(root)
    }
    assert bins[("eval", 5.0, 700.0)] == 0.9 and bins[("train", 0.0, 1.0)] == 0.3
    assert len(bins) == 6
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert {"0", "1", "5", "700"} <= set(texts)
    with pytest.raises(ValueError, match="3 bins"):
        charts.histogram(edges, [charts.Series("x", [1, 2, 3])], title="t", bin_labels=["a"])
    with pytest.raises(ValueError, match="values for 3"):
        charts.histogram(edges, [charts.Series("x", [1.0])], title="t")


def test_line_chart_keeps_its_points():
    roc = [(0.0, 0.0), (0.1, 0.6), (0.4, 0.9), (1.0, 1.0)]
    svg = charts.line_chart(
        [charts.Line("model", roc), charts.Line("baseline", [(0, 0), (1, 1)], dashed=True)],
        title="ROC",
        x_label="false positive rate",
        y_label="true positive rate",
        x_range=(0, 1),
        y_range=(0, 1),
        diagonal=True,
    )
    root = _parse(svg)
    paths = {p.get("data-series"): p for p in _marks(root)}
    points = [
        tuple(map(float, pair.split(","))) for pair in paths["model"].get("data-points").split()
    ]
    assert points == roc
    assert paths["baseline"].get("stroke-dasharray")
    assert any(e.get("class") == "reference" for e in root.iter())


def test_scales_pick_readable_ticks():
    assert charts.Scale.for_values([0.0, 0.87], 0, 100).ticks() == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    log = charts.Scale.for_values([0.002, 0.7], 0, 100, log=True)
    assert log.ticks() == [0.001, 0.01, 0.1, 1.0]
    assert log(0.001) == 0 and log(1.0) == 100 and log(0.1) == pytest.approx(200 / 3)


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (0.5, "0.5"), (12.345, "12.3"), (4870, "4.87k"), (2.5e6, "2.5M"),
     (1.4e9, "1.4e9"), (0.0002, "2e-4"), (-3.25, "-3.25"), (math.inf, "inf")],
)  # fmt: skip
def test_format_number(value, text):
    assert charts.format_number(value) == text


def test_format_percent():
    assert [charts.format_percent(v) for v in (0, 0.0004, 0.053, 0.5, 1)] == [
        "0%",
        "0.04%",
        "5.3%",
        "50%",
        "100%",
    ]


def test_distinct_format_tells_neighbouring_edges_apart():
    tracts = [17031010100.0, 17031010110.0, 17031010120.0]
    text = charts.distinct_format(tracts)
    assert [text(v) for v in tracts] == ["17031010100", "17031010110", "17031010120"]
    close = [1.2345, 1.2351]
    assert len({charts.distinct_format(close)(v) for v in close}) == 2
    assert charts.distinct_format([0.0, 1.5, 700.0]) is charts.format_number


def test_scatter_dots_and_reference_lines():
    points = [(-1.0, 2.0), (0.5, -3.0), (4.0, 1.0)]
    svg = charts.line_chart(
        [
            charts.Line("rows", points, markers=True, connect=False),
            charts.Line("means", [(0.0, 0.5), (3.0, -0.5)], markers=True),
        ],
        title="residuals",
        references=[0.0],
    )
    root = _parse(svg)
    marks = {m.get("data-series"): m for m in _marks(root)}
    scatter = marks["rows"]
    assert scatter.tag == f"{SVG}g"  # dots only, no path
    assert len(scatter.findall(f"{SVG}circle")) == 3
    drawn = [tuple(map(float, p.split(","))) for p in scatter.get("data-points").split()]
    assert drawn == points
    assert marks["means"].tag == f"{SVG}path"
    assert len(list(root.iter(f"{SVG}circle"))) == 3 + 2  # the line's points get dots too
    (zero,) = [e for e in root.iter() if e.get("class") == "reference"]
    assert float(zero.get("data-value")) == 0.0
    assert zero.get("y1") == zero.get("y2")  # horizontal


def test_heatmap_cells_carry_row_column_and_value():
    svg = charts.heatmap(
        ["on_time", "late"],
        ["on_time", "late"],
        [[90.0, 10.0], [30.0, 70.0]],
        title="Confusion matrix",
        shades=[[0.9, 0.1], [0.3, 0.7]],
    )
    root = _parse(svg)
    assert root.get("data-chart") == "heatmap"
    cells = {(m.get("data-row"), m.get("data-column")): m for m in _marks(root)}
    assert {k: float(m.get("data-value")) for k, m in cells.items()} == {
        ("on_time", "on_time"): 90.0,
        ("on_time", "late"): 10.0,
        ("late", "on_time"): 30.0,
        ("late", "late"): 70.0,
    }
    opacity = {k: float(m.get("fill-opacity")) for k, m in cells.items()}
    assert (
        opacity[("on_time", "on_time")] > opacity[("late", "late")] > opacity[("on_time", "late")]
    )
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert {"90", "10", "30", "70"} <= set(texts)
    with pytest.raises(ValueError, match="2 rows of 2"):
        charts.heatmap(["a", "b"], ["a", "b"], [[1.0, 2.0]], title="t")
