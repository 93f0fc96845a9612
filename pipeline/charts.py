"""Hand-built inline SVG charts for self-contained HTML reports (no script, nothing fetched).

Four chart kinds share one frame: a visible title and an accessible ``<title>``/``<desc>``,
axes with ticks and labels, and a legend of the series colors::

    bar_chart(categories, [Series("train", [...]), Series("eval", [...])], title=...)
        grouped bars per category, vertical or ``horizontal=True``; ``references`` draws one
        mark per category (e.g. a threshold) and ``highlight`` recolors chosen bars
    histogram(edges, [Series("train", shares), ...], title=...)
        bars grouped per bin over common bin edges (``len(edges) == bins + 1``); the bins are
        drawn as equal slots labelled with their edges, so unequal (e.g. quantile) bins stay
        readable on long-tailed data
    line_chart([Line("model", [(x, y), ...]), ...], title=..., diagonal=True)
        polylines over numeric axes (ROC, precision-recall, calibration curves); a line with
        ``markers=True`` draws a dot per point, with ``connect=False`` only the dots (a scatter
        plot); ``references`` draws horizontal reference lines (e.g. a residual of 0)
    heatmap(row_labels, column_labels, values, title=...)
        a grid of cells shaded by value with the value written in each (a confusion matrix)

Every chart takes ``scale="linear" | "log"`` for its value axis (``x_scale``/``y_scale`` for
lines); a log axis leaves out values <= 0 rather than inventing a floor for them. Values of
``None`` are unknown: nothing is drawn, and the mark says so.

Every drawn mark carries the numbers it draws, so a test or a script can check a chart against
its source without reading pixels: bars are ``<rect class="mark" data-series=... data-category=...
data-value=...>`` (histogram bars also ``data-low``/``data-high``), reference marks are
``<line class="reference" data-category=... data-value=...>``, lines are ``<path class="mark"
data-series=... data-points="x,y x,y ...">`` (a scatter's dots are a ``<g class="mark">`` with the
same attributes), heatmap cells are ``<rect class="mark" data-row=... data-column=...
data-value=...>``. Numbers are written with ``repr`` precision. The
root ``<svg>`` has ``data-chart`` (the kind) and ``data-scale``. Charts are meant to be inlined
in HTML; :func:`standalone` makes one an ``.svg`` file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import itertools
import math
from collections.abc import Callable, Mapping, Sequence

# Okabe-Ito colors (distinguishable with the common color-vision deficiencies), in legend order.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000")
ALERT = "#c62828"  # highlighted bars (e.g. a distance above its threshold)
_INK, _GRID, _MUTED = "#222", "#e3e3e3", "#666"
_SVG_NAMESPACE = "http://www.w3.org/2000/svg"
_FONT = 11  # px
_CHAR = 6.2  # average glyph width at _FONT, for layout of labels


@dataclasses.dataclass(frozen=True)
class Series:
    """One named set of values, one value per category or bin (``None``: unknown)."""

    name: str
    values: Sequence[float | None]
    color: str | None = None


@dataclasses.dataclass(frozen=True)
class Line:
    """One named polyline of (x, y) points; ``markers`` adds a dot per point and ``connect=False``
    leaves out the line (a scatter plot)."""

    name: str
    points: Sequence[tuple[float, float]]
    color: str | None = None
    dashed: bool = False
    markers: bool = False
    connect: bool = True


Formatter = Callable[[float], str]


def format_number(value: float) -> str:
    """Compact tick text: 3 significant digits, k/M suffixes, exponent for the very small."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    magnitude = abs(value)
    if magnitude >= 1e9 or magnitude < 1e-3:
        mantissa, exponent = f"{value:.2e}".split("e")
        return f"{float(mantissa):g}e{int(exponent)}"
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if magnitude >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}"


def distinct_format(values: Sequence[float]) -> Formatter:
    """:func:`format_number`, or more digits where it would print two neighbours alike (bin
    edges of census tract ids, epoch-second timestamps)."""
    ordered = sorted(set(values))

    def distinct(formatter: Formatter) -> bool:
        texts = [formatter(v) for v in ordered]
        return all(a != b for a, b in itertools.pairwise(texts))

    if distinct(format_number):
        return format_number
    for digits in range(4, 13):
        if all(v == int(v) for v in ordered if math.isfinite(v)):
            candidate = _integer_format(digits)
        else:
            candidate = _digits_format(digits)
        if distinct(candidate):
            return candidate
    return repr


def _digits_format(digits: int) -> Formatter:
    return lambda value: f"{value:.{digits}g}"


def _integer_format(digits: int) -> Formatter:
    """Integers in full up to ``digits`` significant digits, e.g. 17031010110 (not 1.7e10)."""

    def format_integer(value: float) -> str:
        text = f"{value:.{digits}g}"
        return str(int(float(text))) if "e" in text and abs(value) < 1e15 else text

    return format_integer


def format_percent(value: float) -> str:
    """Shares in [0, 1] as percentages, with more digits where they are small."""
    if value == 0:
        return "0%"
    if abs(value) < 0.001:
        return f"{value * 100:.2g}%"
    if abs(value) < 0.1:
        return f"{value * 100:.1f}%"
    return f"{value * 100:.0f}%"


def palette(names: Sequence[str]) -> dict[str, str]:
    """A stable color per name, in order (callers pass the same order to every chart)."""
    return dict(zip(names, itertools.cycle(PALETTE), strict=False))


def standalone(svg: str) -> str:
    """A chart as an ``.svg`` file's text: inline in HTML the parser supplies the SVG namespace,
    a file must declare it."""
    return svg.replace("<svg ", f'<svg xmlns="{_SVG_NAMESPACE}" ', 1)


# ---- scales ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scale:
    """Maps a value domain onto a pixel range, linearly or on log10."""

    low: float
    high: float
    start: float  # pixel of ``low``
    end: float  # pixel of ``high``
    log: bool = False

    @classmethod
    def for_values(
        cls, values: Sequence[float], start: float, end: float, log: bool = False
    ) -> Scale:
        """A domain from 0 (linear) or the smallest positive value's decade (log) to the max."""
        finite = [v for v in values if v is not None and math.isfinite(v)]
        if log:
            positive = [v for v in finite if v > 0] or [1.0]
            low = 10 ** math.floor(math.log10(min(positive)))
            high = 10 ** math.ceil(math.log10(max(positive)))
            return cls(low, high if high > low else low * 10, start, end, True)
        high = max([0.0, *finite])
        low = min([0.0, *finite])
        if high == low:
            high = low + 1.0
        return cls(low, _nice_ceiling(high) if high > 0 else high, start, end)

    def __call__(self, value: float) -> float:
        if self.log:
            value = max(value, self.low)
            fraction = math.log10(value / self.low) / math.log10(self.high / self.low)
        else:
            fraction = (value - self.low) / (self.high - self.low)
        return self.start + fraction * (self.end - self.start)

    def shows(self, value: float | None) -> bool:
        """Whether a bar for ``value`` can be drawn on this scale."""
        return value is not None and math.isfinite(value) and (value > 0 or not self.log)

    def ticks(self) -> list[float]:
        if self.log:
            first, last = round(math.log10(self.low)), round(math.log10(self.high))
            step = max(1, math.ceil((last - first) / 6))
            return [10.0**e for e in range(first, last + 1, step)]
        step = _nice_step((self.high - self.low) / 5)
        first = math.ceil(self.low / step - 1e-9)
        return [round(i * step, 12) for i in range(first, math.floor(self.high / step + 1e-9) + 1)]


def _nice_step(raw: float) -> float:
    exponent = math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        step = factor * 10**exponent
        if step >= raw:
            return step
    return 10 ** (exponent + 1)


def _nice_ceiling(value: float) -> float:
    step = _nice_step(value / 5)
    return math.ceil(value / step - 1e-9) * step


# ---- charts ----------------------------------------------------------------------------------


def bar_chart(
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    title: str,
    value_label: str = "",
    category_label: str = "",
    description: str = "",
    horizontal: bool = False,
    scale: str = "linear",
    value_format: Formatter = format_number,
    references: Sequence[float | None] | None = None,
    reference_label: str = "threshold",
    highlight: Callable[[str, str, float], bool] | None = None,
    value_range: tuple[float, float] | None = None,
    value_labels: bool = False,
    width: int = 460,
    height: int | None = None,
) -> str:
    """Grouped bars: one group per category, one bar per series.

    ``references`` gives one mark per category (``None``: none), drawn across that category's
    group; ``highlight(series, category, value)`` picks bars drawn in :data:`ALERT`.
    ``value_range`` fixes the value axis (e.g. 0..1 for shares, so charts compare);
    ``value_labels`` writes each value at its bar's end (horizontal charts).
    """
    _check_lengths(len(categories), series)
    log = _is_log(scale)
    colors = _colors(series)
    values = [v for s in series for v in s.values if v is not None]
    values += [r for r in references or () if r is not None]
    band = max(14, 8 + 10 * len(series))
    legend = [(s.name, colors[s.name], False) for s in series]
    if references is not None:
        legend.append((reference_label, _INK, True))
    if horizontal:
        label_width = min(260, 12 + _CHAR * max((len(c) for c in categories), default=4))
        frame = _Frame(
            width,
            height or 90 + band * len(categories),
            left=label_width,
            right_margin=48 if value_labels else 24,
        )
        scale_ = _range_scale(value_range, values, frame.left, frame.right, log, zero=True)
    else:
        frame = _Frame(width, height or 240, bottom=58 if category_label else 44)
        scale_ = _range_scale(value_range, values, frame.bottom_y, frame.top, log, zero=True)
    body = _grid_and_value_axis(frame, scale_, value_format, value_label, horizontal)
    slot = (frame.plot_height if horizontal else frame.plot_width) / max(1, len(categories))
    inner = slot * 0.8 / max(1, len(series))
    for index, category in enumerate(categories):
        origin = (frame.top if horizontal else frame.left) + index * slot
        body.append(_category_label(frame, category, origin + slot / 2, horizontal))
        for position, one in enumerate(series):
            value = one.values[index]
            offset = origin + slot * 0.1 + position * inner
            color = colors[one.name]
            if highlight and value is not None and highlight(one.name, category, value):
                color = ALERT
            tip = f"{one.name} · {category}: " + (
                "unknown" if value is None else value_format(value)
            )
            body.append(
                _bar(scale_, frame, offset, inner, value, color, horizontal, tip,
                     {"series": one.name, "category": category})
            )  # fmt: skip
            if value_labels and horizontal and value is not None:
                text = value_format(value)
                x = (scale_(value) if scale_.shows(value) else frame.left) + 4
                if references is not None and scale_.shows(references[index]):
                    mark = scale_(references[index])
                    if x - 6 <= mark <= x + _CHAR * len(text) + 2:
                        x = mark + 4  # do not write over the reference mark
                body.append(_text(x, offset + inner / 2 + 4, text))
        if references is not None and references[index] is not None:
            body.append(
                _reference(scale_, origin, slot, references[index], horizontal, category,
                           f"{reference_label} · {category}: {value_format(references[index])}")
            )  # fmt: skip
    if category_label:
        body.append(_axis_title(frame, category_label, vertical_axis=horizontal))
    return _svg("bar", scale, frame, title, description, legend, body)


def histogram(
    edges: Sequence[float],
    series: Sequence[Series],
    *,
    title: str,
    value_label: str = "share of values",
    bin_label: str = "",
    description: str = "",
    scale: str = "linear",
    value_format: Formatter = format_percent,
    edge_format: Formatter | None = None,
    bin_labels: Sequence[str] | None = None,
    width: int = 460,
    height: int = 240,
) -> str:
    """Bars grouped per common bin ``(edges[i], edges[i + 1]]``, one bar per series.

    The axis is labelled with the bin edges (``edge_format``, by default
    :func:`distinct_format` of the edges), or with ``bin_labels`` (one per bin, centred: e.g.
    the integers a bin of an integer feature holds).
    """
    edge_format = edge_format or distinct_format(edges)
    bins = len(edges) - 1
    _check_lengths(bins, series)
    if bin_labels is not None and len(bin_labels) != bins:
        raise ValueError(f"{len(bin_labels)} bin labels for {bins} bins")
    log = _is_log(scale)
    colors = _colors(series)
    last_label = bin_labels[-1] if bin_labels else edge_format(edges[-1])
    frame = _Frame(width, height, bottom=50, right_margin=max(14, _CHAR * len(last_label) / 2 + 4))
    values = [v for s in series for v in s.values if v is not None]
    scale_ = Scale.for_values(values, frame.bottom_y, frame.top, log)
    body = _grid_and_value_axis(frame, scale_, value_format, value_label, horizontal=False)
    slot = frame.plot_width / max(1, bins)
    inner = slot * 0.84 / max(1, len(series))
    previous = None
    for index in range(bins + 1):
        x = frame.left + index * slot
        text = edge_format(edges[index])
        body.append(f'<line x1="{x:.1f}" y1="{frame.bottom_y:.1f}" x2="{x:.1f}" '
                    f'y2="{frame.bottom_y + 4:.1f}" stroke="{_INK}"/>')  # fmt: skip
        if (
            bin_labels is None
            and text != previous
            and (index % _label_every(slot, [edge_format(e) for e in edges]) == 0 or index == bins)
        ):
            body.append(_text(x, frame.bottom_y + 15, text, anchor="middle"))
        previous = text
    every = _label_every(slot, bin_labels or [])
    for index in range(bins):
        low, high = edges[index], edges[index + 1]
        name = f"({edge_format(low)}, {edge_format(high)}]"
        if bin_labels is not None:
            name = bin_labels[index]
            if index % every == 0:
                center = frame.left + (index + 0.5) * slot
                body.append(_text(center, frame.bottom_y + 15, name, anchor="middle"))
        for position, one in enumerate(series):
            value = one.values[index]
            offset = frame.left + index * slot + slot * 0.08 + position * inner
            tip = f"{one.name} · {name}: " + ("unknown" if value is None else value_format(value))
            attributes = {"series": one.name, "category": name, "low": low, "high": high}
            body.append(
                _bar(scale_, frame, offset, inner, value, colors[one.name], False, tip, attributes)
            )
    if bin_label:
        body.append(_axis_title(frame, bin_label, vertical_axis=False))
    legend = [(s.name, colors[s.name], False) for s in series]
    return _svg("histogram", scale, frame, title, description, legend, body)


def line_chart(
    lines: Sequence[Line],
    *,
    title: str,
    x_label: str = "",
    y_label: str = "",
    description: str = "",
    x_range: tuple[float, float] | None = None,
    y_range: tuple[float, float] | None = None,
    x_scale: str = "linear",
    y_scale: str = "linear",
    x_format: Formatter = format_number,
    y_format: Formatter = format_number,
    diagonal: bool = False,
    references: Sequence[float] = (),
    width: int = 460,
    height: int = 300,
) -> str:
    """Polylines (or dots) over numeric axes; ``diagonal`` adds the y = x reference (ROC chance
    line, perfect calibration), ``references`` horizontal lines at those y values. Points
    outside a log axis (<= 0) are left out."""
    colors = _colors(lines)
    frame = _Frame(width, height, bottom=58 if x_label else 44)
    xs = [x for line in lines for x, _ in line.points]
    ys = [y for line in lines for _, y in line.points] + list(references)
    x_axis = _range_scale(x_range, xs, frame.left, frame.right, _is_log(x_scale))
    y_axis = _range_scale(y_range, ys, frame.bottom_y, frame.top, _is_log(y_scale))
    body = _grid_and_value_axis(frame, y_axis, y_format, y_label, horizontal=False)
    for tick in x_axis.ticks():
        x = x_axis(tick)
        body.append(f'<line x1="{x:.1f}" y1="{frame.top:.1f}" x2="{x:.1f}" '
                    f'y2="{frame.bottom_y:.1f}" stroke="{_GRID}"/>')  # fmt: skip
        body.append(_text(x, frame.bottom_y + 15, x_format(tick), anchor="middle"))
    if diagonal:
        low = max(x_axis.low, y_axis.low)
        high = min(x_axis.high, y_axis.high)
        body.append(
            f'<line class="reference" x1="{x_axis(low):.1f}" y1="{y_axis(low):.1f}" '
            f'x2="{x_axis(high):.1f}" y2="{y_axis(high):.1f}" stroke="{_MUTED}" '
            f'stroke-dasharray="4 3"/>'
        )
    for value in references:
        if y_axis.shows(value) and y_axis.low <= value <= y_axis.high:
            at = y_axis(value)
            body.append(
                f'<line class="reference" x1="{frame.left:.1f}" y1="{at:.1f}" '
                f'x2="{frame.right:.1f}" y2="{at:.1f}" stroke="{_MUTED}" '
                f'stroke-dasharray="4 3" data-value="{value!r}"/>'
            )
    for line in lines:
        body.append(_line_marks(line, colors[line.name], x_axis, y_axis))
    body.append(_axis_title(frame, x_label, vertical_axis=False))
    legend = [(line.name, colors[line.name], line.dashed) for line in lines]
    return _svg("line", y_scale, frame, title, description, legend, body)


def _line_marks(line: Line, color: str, x_axis: Scale, y_axis: Scale) -> str:
    """A line's path and/or dots; the mark carries every point it was given."""
    shown = [(x_axis(x), y_axis(y)) for x, y in line.points if x_axis.shows(x) and y_axis.shows(y)]
    points = " ".join(f"{x!r},{y!r}" for x, y in line.points)
    data = f'data-series="{_e(line.name)}" data-points="{points}"'
    # Dots of a scatter are translucent, so dense regions read darker.
    dot = f'r="2.2" fill="{color}"'
    if not line.connect:
        dot = f'r="1.8" fill="{color}" fill-opacity=".45"'
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" {dot}/>' for x, y in shown)
    dots = dots if line.markers else ""
    if not line.connect:
        return f'<g class="mark" {data}><title>{_e(line.name)}</title>{dots}</g>'
    path = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(shown))
    dash = ' stroke-dasharray="6 3"' if line.dashed else ""
    return (
        f'<path class="mark" d="{path}" fill="none" stroke="{color}" stroke-width="2"{dash} '
        f"{data}><title>{_e(line.name)}</title></path>{dots}"
    )


def heatmap(
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    values: Sequence[Sequence[float]],
    *,
    title: str,
    row_label: str = "",
    column_label: str = "",
    description: str = "",
    value_format: Formatter = format_number,
    shades: Sequence[Sequence[float]] | None = None,
    color: str = PALETTE[0],
    cell: int = 56,
) -> str:
    """A grid of cells, one per (row, column), each shaded by its value and labelled with it.

    ``shades`` (same shape, values in [0, 1]) sets each cell's shade instead of its value
    divided by the largest value: e.g. a confusion matrix shaded by row shares, so a rare class
    is as readable as a common one.
    """
    if len(values) != len(row_labels) or any(len(r) != len(column_labels) for r in values):
        raise ValueError(f"values must be {len(row_labels)} rows of {len(column_labels)}")
    label_width = min(200, 16 + _CHAR * max((len(r) for r in row_labels), default=4))
    title_width = 16 + (_CHAR + 0.6) * len(title)
    frame = _Frame(
        max(label_width + cell * len(column_labels) + 14, title_width),
        46 + 20 + cell * len(row_labels) + 40,
        left=label_width,
        top_margin=46 + 20,
        bottom=40,
    )
    largest = max((v for row in values for v in row if v is not None), default=0) or 1
    body = []
    for j, name in enumerate(column_labels):
        center = frame.left + (j + 0.5) * cell
        body.append(_text(center, frame.top - 6, _clip(name, 10), anchor="middle"))
    for i, row_name in enumerate(row_labels):
        y = frame.top + i * cell
        body.append(_text(frame.left - 6, y + cell / 2 + 4, _clip(row_name, 30), anchor="end"))
        for j, column_name in enumerate(column_labels):
            value = values[i][j]
            shade = shades[i][j] if shades is not None else (value or 0) / largest
            shade = min(1.0, max(0.0, shade if shade is not None and math.isfinite(shade) else 0))
            x = frame.left + j * cell
            ink = "#fff" if shade > 0.55 else _INK
            tip = f"{row_name} · {column_name}: " + (
                "unknown" if value is None else value_format(value)
            )
            shown = "" if value is None else f' data-value="{_e(_number_text(value))}"'
            body.append(
                f'<rect class="mark" x="{x:.1f}" y="{y:.1f}" width="{cell}" height="{cell}" '
                f'fill="{color}" fill-opacity="{0.06 + 0.94 * shade:.3f}" stroke="#fff" '
                f'data-row="{_e(row_name)}" data-column="{_e(column_name)}"{shown}>'
                f"<title>{_e(tip)}</title></rect>"
            )
            text = "-" if value is None else value_format(value)
            body.append(_text(x + cell / 2, y + cell / 2 + 4, text, anchor="middle", fill=ink))
    if column_label:
        body.append(_text(frame.left + cell * len(column_labels) / 2, frame.top - 22,
                          column_label, anchor="middle", fill=_MUTED))  # fmt: skip
    if row_label:
        body.append(_text(8, frame.bottom_y + 26, row_label, fill=_MUTED))
    return _svg("heatmap", "linear", frame, title, description, [], body, axes=False)


# ---- frame and marks -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Frame:
    width: float
    height: float
    left: float = 58
    top_margin: float = 46  # title and legend
    right_margin: float = 14
    bottom: float = 44

    @property
    def top(self) -> float:
        return self.top_margin

    @property
    def right(self) -> float:
        return self.width - self.right_margin

    @property
    def bottom_y(self) -> float:
        return self.height - self.bottom

    @property
    def plot_width(self) -> float:
        return self.right - self.left

    @property
    def plot_height(self) -> float:
        return self.bottom_y - self.top


def _svg(kind, scale, frame, title, description, legend, body, axes: bool = True) -> str:
    digest = hashlib.sha1("".join([kind, scale, title, description, *body]).encode())
    ident = f"chart-{digest.hexdigest()[:10]}"
    desc = f'<desc id="{ident}-d">{_e(description)}</desc>' if description else ""
    labelled = f"{ident}-t {ident}-d" if description else f"{ident}-t"
    return "".join(
        [
            f'<svg class="chart" role="img" '
            f'width="{frame.width:.0f}" height="{frame.height:.0f}" '
            f'viewBox="0 0 {frame.width:.0f} {frame.height:.0f}" aria-labelledby="{labelled}" '
            f'data-chart="{kind}" data-scale="{_e(scale)}" font-family="system-ui, sans-serif" '
            f'font-size="{_FONT}">',
            f'<title id="{ident}-t">{_e(title)}</title>{desc}',
            _text(8, 16, title, weight="bold", size=_FONT + 1),
            _legend(frame, legend),
            *body,
            _axes(frame) if axes else "",
            "</svg>",
        ]
    )


def _axes(frame: _Frame) -> str:
    return (
        f'<line x1="{frame.left:.1f}" y1="{frame.bottom_y:.1f}" x2="{frame.right:.1f}" '
        f'y2="{frame.bottom_y:.1f}" stroke="{_INK}"/>'
        f'<line x1="{frame.left:.1f}" y1="{frame.top:.1f}" x2="{frame.left:.1f}" '
        f'y2="{frame.bottom_y:.1f}" stroke="{_INK}"/>'
    )


def _legend(frame: _Frame, entries: Sequence[tuple[str, str, bool]]) -> str:
    """Swatches in one row under the title (wrapping to a second row if needed)."""
    parts = ['<g class="legend">']
    x, y = 8.0, 32
    for name, color, dashed in entries:
        needed = 18 + _CHAR * len(name) + 12
        if x + needed > frame.width - 4 and x > 8:
            x, y = 8.0, y + 14
        if dashed:
            parts.append(
                f'<line x1="{x + 5:.1f}" y1="{y - 9:.1f}" x2="{x + 5:.1f}" y2="{y + 3:.1f}" '
                f'stroke="{color}" stroke-width="2" stroke-dasharray="3 2" '
                f'data-legend="{_e(name)}"/>'
            )
        else:
            parts.append(
                f'<rect x="{x:.1f}" y="{y - 8:.1f}" width="10" height="10" fill="{color}" '
                f'data-legend="{_e(name)}"/>'
            )
        parts.append(_text(x + 14, y + 1, name))
        x += needed
    parts.append("</g>")
    return "".join(parts)


def _grid_and_value_axis(frame, scale, value_format, label, horizontal) -> list[str]:
    parts = []
    for tick in scale.ticks():
        at = scale(tick)
        if horizontal:
            parts.append(f'<line x1="{at:.1f}" y1="{frame.top:.1f}" x2="{at:.1f}" '
                         f'y2="{frame.bottom_y:.1f}" stroke="{_GRID}"/>')  # fmt: skip
            parts.append(_text(at, frame.bottom_y + 15, value_format(tick), anchor="middle"))
        else:
            parts.append(f'<line x1="{frame.left:.1f}" y1="{at:.1f}" x2="{frame.right:.1f}" '
                         f'y2="{at:.1f}" stroke="{_GRID}"/>')  # fmt: skip
            parts.append(_text(frame.left - 6, at + 4, value_format(tick), anchor="end"))
    if label:
        if horizontal:
            parts.append(_text((frame.left + frame.right) / 2, frame.height - 8, label,
                               anchor="middle", fill=_MUTED))  # fmt: skip
        else:
            y = (frame.top + frame.bottom_y) / 2
            parts.append(
                f'<text x="14" y="{y:.1f}" text-anchor="middle" fill="{_MUTED}" '
                f'transform="rotate(-90 14 {y:.1f})">{_e(label)}</text>'
            )
    return parts


def _axis_title(frame: _Frame, label: str, vertical_axis: bool) -> str:
    if not label:
        return ""
    if vertical_axis:
        return _text(8, frame.top - 4, label, fill=_MUTED)
    return _text((frame.left + frame.right) / 2, frame.height - 8, label, anchor="middle",
                 fill=_MUTED)  # fmt: skip


def _category_label(frame: _Frame, category: str, center: float, horizontal: bool) -> str:
    if horizontal:
        return _text(frame.left - 6, center + 4, _clip(category, 40), anchor="end")
    return _text(center, frame.bottom_y + 15, _clip(category, 14), anchor="middle")


def _bar(scale, frame, offset, thickness, value, color, horizontal, tip, attributes) -> str:
    data = "".join(f' data-{key}="{_e(_number_text(v))}"' for key, v in attributes.items())
    if not scale.shows(value):
        state = "unknown" if value is None else "off-scale"
        shown = "" if value is None else f' data-value="{value!r}"'
        return f'<g class="mark" data-{state}="1"{data}{shown}><title>{_e(tip)}</title></g>'
    base = scale(max(scale.low, 0.0) if not scale.log else scale.low)
    at = scale(value)
    if horizontal:
        x, y, w, h = min(base, at), offset, abs(at - base), thickness
    else:
        x, y, w, h = offset, min(base, at), thickness, abs(at - base)
    return (
        f'<rect class="mark" x="{x:.2f}" y="{y:.2f}" width="{max(w, 0.0):.2f}" '
        f'height="{max(h, 0.0):.2f}" fill="{color}"{data} data-value="{value!r}">'
        f"<title>{_e(tip)}</title></rect>"
    )


def _reference(scale, origin, slot, value, horizontal, category, tip) -> str:
    if not scale.shows(value):
        return ""
    at = scale(value)
    if horizontal:
        x1 = x2 = at
        y1, y2 = origin + slot * 0.02, origin + slot * 0.98
    else:
        y1 = y2 = at
        x1, x2 = origin + slot * 0.02, origin + slot * 0.98
    return (
        f'<line class="reference" x1="{x1:.2f}" y1="{y1:.2f}" x2="{x2:.2f}" y2="{y2:.2f}" '
        f'stroke="{_INK}" stroke-width="2" stroke-dasharray="3 2" '
        f'data-category="{_e(category)}" data-value="{value!r}"><title>{_e(tip)}</title></line>'
    )


def _label_every(slot: float, labels: Sequence[str]) -> int:
    """Label every n-th slot or edge so that the labels do not overlap."""
    widest = max((len(text) for text in labels), default=0) * _CHAR + 6
    return max(1, math.ceil(widest / max(slot, 1.0)))


def _range_scale(given, values, start, end, log, zero=False) -> Scale:
    """A fixed domain if ``given``; else from the values (from 0 when ``zero``, as bars need)."""
    if given is not None:
        return Scale(given[0], given[1], start, end, log)
    if log or zero:
        return Scale.for_values(values, start, end, log=log)
    finite = [v for v in values if math.isfinite(v)] or [0.0, 1.0]
    low, high = min(finite), max(finite)
    return Scale(low, high if high > low else low + 1.0, start, end)


def _text(x, y, text, anchor="start", weight="normal", size=None, fill=_INK) -> str:
    size_attr = f' font-size="{size}"' if size else ""
    bold = ' font-weight="bold"' if weight == "bold" else ""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{fill}"{bold}{size_attr}>'
        f"{_e(text)}</text>"
    )


def _colors(series: Sequence[Series | Line]) -> dict[str, str]:
    defaults = palette([s.name for s in series])
    return {s.name: s.color or defaults[s.name] for s in series}


def _check_lengths(expected: int, series: Sequence[Series]) -> None:
    for one in series:
        if len(one.values) != expected:
            raise ValueError(
                f"series {one.name!r} has {len(one.values)} values for {expected} categories/bins"
            )


def _is_log(scale: str) -> bool:
    if scale not in ("linear", "log"):
        raise ValueError(f"scale must be 'linear' or 'log', not {scale!r}")
    return scale == "log"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number_text(value: object) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def legend_html(colors: Mapping[str, str]) -> str:
    """An HTML legend (outside any chart) for a page whose charts share series colors."""
    items = "".join(
        f'<span class="swatch" style="background:{color}"></span>{_e(name)} '
        for name, color in colors.items()
    )
    return f'<p class="legend">{items}</p>'
