"""A self-contained HTML page per run: split statistics side by side, anomalies, skew and drift.

One file, inline CSS and inline SVG charts (:mod:`pipeline.validation.figures`), no scripts or
external resources, so it opens offline from a run directory or a CI artifact. Each chart is
rendered on a linear and on a log scale; a checkbox at the top switches between them with CSS.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from pathlib import Path

from tensorflow_metadata.proto.v0 import statistics_pb2

from pipeline import charts, storage
from pipeline.validation import figures
from pipeline.validation.anomalies import Severity, ValidationReport
from pipeline.validation.stats import feature_stats

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.BLOCKING { background: #fdd; } .WARNING { background: #ffe9b3; } .ok { background: #dfd; }
.flag { font-weight: bold; }
.verdict { font-size: 1.15em; font-weight: bold; padding: .5em .75em; border: 1px solid #ccc; }
.bar { display: inline-block; height: .7em; background: #69c; vertical-align: middle; }
small { color: #666; }
.legend .swatch { display: inline-block; width: .8em; height: .8em; margin: 0 .3em 0 .9em;
  vertical-align: -.05em; }
.toggle-label { margin-left: .3em; }
.scale-log { display: none; }
#log-scale:checked ~ * .scale-linear { display: none; }
#log-scale:checked ~ * .scale-log { display: block; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); gap: 1em; }
.card { border: 1px solid #ddd; padding: .25em .75em .75em; }
.card h3 { font-size: 1.05em; margin: .4em 0; }
.card .note { margin: 0 0 .3em; }
figure { margin: .25em 0; }
svg.chart { max-width: 100%; height: auto; }
"""

_TOP_VALUES = 3


def render_html(
    stats: Mapping[str, statistics_pb2.DatasetFeatureStatisticsList],
    reports: Mapping[str, ValidationReport],
    title: str = "Validation report",
) -> str:
    """The report page for split ``stats`` (by split name) and validation ``reports`` (by label)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        _verdict_banner(reports),
        _summary(stats, reports),
        _scale_toggle(stats),
        _anomalies(reports),
        _measurements(stats, reports),
        _features(stats, reports),
        _feature_charts(stats, reports),
        "</body></html>",
    ]
    return "\n".join(parts)


def write_html(
    path: str | Path,
    stats: Mapping[str, statistics_pb2.DatasetFeatureStatisticsList],
    reports: Mapping[str, ValidationReport],
    title: str = "Validation report",
) -> str:
    """Write the page atomically (a path or a gs:// URI); returns where it went."""
    storage.write_text_atomic(path, render_html(stats, reports, title))
    return str(path)


# ---- sections ------------------------------------------------------------------------------


def _verdict_banner(reports: Mapping[str, ValidationReport]) -> str:
    """The page's answer first: does anything block, and where."""
    blocked = [label for label, report in reports.items() if not report.passed]
    blocking = sum(len(r.blocking) for r in reports.values())
    warnings = sum(len(r.warnings) for r in reports.values())
    noun = "warning" if warnings == 1 else "warnings"
    if not blocked:
        return f'<p class="verdict ok">Passed: no blocking anomalies, {warnings} {noun}.</p>'
    where = ", ".join(_e(label) for label in blocked)
    return (
        f'<p class="verdict BLOCKING">Blocked: {blocking} blocking anomalies (in {where}), '
        f"{warnings} {noun}.</p>"
    )


def _summary(stats, reports: Mapping[str, ValidationReport]) -> str:
    splits = ", ".join(
        f"{_e(name)}: {s.datasets[0].num_examples:,} rows" if s.datasets else f"{_e(name)}: empty"
        for name, s in stats.items()
    )
    rows = [
        _row(
            [
                label,
                report.environment,
                _verdict(report),
                len(report.blocking),
                len(report.warnings),
            ],
            css="ok" if report.passed else "BLOCKING",
        )
        for label, report in reports.items()
    ]
    head = _row(["report", "environment", "result", "blocking", "warnings"], header=True)
    return f"<p>{splits}</p><h2>Summary</h2><table>{head}{''.join(rows)}</table>"


def _anomalies(reports: Mapping[str, ValidationReport]) -> str:
    # Blocking findings first; within a severity, in report order.
    found = [(label, a) for label, report in reports.items() for a in report.blocking]
    found += [(label, a) for label, report in reports.items() for a in report.warnings]
    rows = [
        _row(
            [label, a.severity.value, a.check.value, a.feature, a.kind, a.description],
            css=a.severity.value,
        )
        for label, a in found
    ]
    if not rows:
        return "<h2>Anomalies</h2><p>None.</p>"
    head = _row(["report", "severity", "check", "feature", "anomaly", "details"], True)
    return f"<h2>Anomalies</h2><table>{head}{''.join(rows)}</table>"


def _scale_toggle(stats) -> str:
    """The log-scale switch (a checkbox the CSS reads: no script) and the split colors."""
    return (
        '<input type="checkbox" id="log-scale">'
        '<label class="toggle-label" for="log-scale">log scale for distributions and '
        "distances</label>" + charts.legend_html(_split_colors(stats))
    )


def _split_colors(stats) -> dict[str, str]:
    return charts.palette(list(stats))


def _measurements(stats, reports: Mapping[str, ValidationReport]) -> str:
    rows = [
        _row(
            [
                label,
                m.check.value,
                m.feature,
                m.comparator,
                _Num(m.value),
                _Num(m.threshold),
                "above threshold" if m.exceeded else "ok",
            ],
            css=_measurement_css(report, m) if m.exceeded else "ok",
        )
        for label, report in reports.items()
        for m in report.measurements
    ]
    if not rows:
        return "<h2>Skew and drift</h2><p>No comparisons in these checks.</p>"
    head = _row(["report", "check", "feature", "distance", "value", "threshold", "result"], True)
    colors = _split_colors(stats)
    plots = "".join(
        _scaled(
            lambda scale, label=label, report=report: figures.distance_chart(
                label, report, colors.get(figures.candidate_split(label), charts.PALETTE[0]), scale
            ),
            {"figure": "distances", "report": label},
        )
        for label, report in reports.items()
        if report.measurements
    )
    return (
        f'<h2>Skew and drift</h2><div class="cards">{plots}</div>'
        f"<table>{head}{''.join(rows)}</table>"
    )


def _features(stats, reports: Mapping[str, ValidationReport]) -> str:
    per_split = {name: feature_stats(s) for name, s in stats.items()}
    names = list(dict.fromkeys(n for features in per_split.values() for n in features))
    flagged = {a.feature for r in reports.values() for a in r.anomalies}
    head = _row(["feature", *[f"{n}: present" for n in per_split], *per_split], header=True)
    rows = []
    for name in names:
        present = [_presence(per_split[split].get(name)) for split in per_split]
        summaries = [_summary_of(per_split[split].get(name)) for split in per_split]
        label = f'<span class="flag">{_e(name)} !</span>' if name in flagged else _e(name)
        rows.append(f"<tr><td>{label}</td>{''.join(present)}{''.join(summaries)}</tr>")
    return f"<h2>Features</h2><table>{head}{''.join(rows)}</table>"


def _feature_charts(stats, reports: Mapping[str, ValidationReport]) -> str:
    """One card per feature: its distribution per split and its missing share per split."""
    per_split = {name: feature_stats(s) for name, s in stats.items()}
    names = list(dict.fromkeys(n for features in per_split.values() for n in features))
    colors = _split_colors(stats)
    cards = []
    for name in names:
        feature = {split: per_split[split].get(name) for split in per_split}
        kinds = sorted({a.kind for r in reports.values() for a in r.anomalies if a.feature == name})
        absent = [split for split, f in feature.items() if f is None]
        notes = []
        if kinds:
            notes.append(f'<p class="note flag">anomalies: {_e(", ".join(kinds))}</p>')
        if absent:
            notes.append(f'<p class="note"><small>absent in {_e(", ".join(absent))}</small></p>')
        distribution = _scaled(
            lambda scale, name=name, feature=feature: figures.distribution_chart(
                name, feature, colors, scale
            ),
            {"figure": "distribution", "feature": name},
        )
        missing_svg = figures.missing_chart(name, feature, colors)
        missing = _figure(missing_svg, {"figure": "missing", "feature": name})
        cards.append(
            f'<section class="card" id="feature-{_e(name)}" data-feature="{_e(name)}">'
            f"<h3>{_e(name)}</h3>{''.join(notes)}{distribution}{missing}</section>"
        )
    return f'<h2>Feature distributions</h2><div class="cards">{"".join(cards)}</div>'


def _scaled(render, data: Mapping[str, str]) -> str:
    """A chart twice, on a linear and a log scale; the page's checkbox shows one of them."""
    parts = []
    for scale in ("linear", "log"):
        svg = render(scale)
        if svg:
            parts.append(_figure(svg, {**data, "scale": scale}, css=f"scale-{scale}"))
    return "".join(parts)


def _figure(svg: str, data: Mapping[str, str], css: str = "") -> str:
    attributes = "".join(f' data-{key}="{_e(value)}"' for key, value in data.items())
    klass = f' class="{css}"' if css else ""
    return f"<figure{klass}{attributes}>{svg}</figure>"


# ---- cells ---------------------------------------------------------------------------------


class _Num(float):
    """A number cell, right-aligned."""


def _row(cells: Iterable[object], header: bool = False, css: str = "") -> str:
    tag = "th" if header else "td"
    out = []
    for cell in cells:
        if isinstance(cell, _Num):
            out.append(f'<td class="num">{cell:.4g}</td>')
        else:
            out.append(f"<{tag}>{_e(str(cell))}</{tag}>")
    klass = f' class="{css}"' if css else ""
    return f"<tr{klass}>{''.join(out)}</tr>"


def _verdict(report: ValidationReport) -> str:
    return "passed" if report.passed else "blocked"


def _measurement_css(report: ValidationReport, measurement) -> str:
    severities = {
        a.severity
        for a in report.anomalies
        if a.feature == measurement.feature and a.check is measurement.check
    }
    return Severity.BLOCKING.value if Severity.BLOCKING in severities else Severity.WARNING.value


def _common(feature: statistics_pb2.FeatureNameStatistics):
    kind = feature.WhichOneof("stats")
    return getattr(feature, kind).common_stats if kind else None


def _presence(feature: statistics_pb2.FeatureNameStatistics | None) -> str:
    common = _common(feature) if feature is not None else None
    if common is None:
        return "<td><small>absent</small></td>"
    total = common.num_non_missing + common.num_missing
    fraction = common.num_non_missing / total if total else 0.0
    bar = f'<span class="bar" style="width:{fraction * 4:.2f}em"></span>'
    return f'<td class="num">{fraction:.1%} {bar}</td>'


def _summary_of(feature: statistics_pb2.FeatureNameStatistics | None) -> str:
    if feature is None:
        return "<td><small>absent</small></td>"
    common = _common(feature)
    if common is not None and common.num_non_missing == 0:
        return "<td><small>no values</small></td>"
    if feature.HasField("num_stats"):
        n = feature.num_stats
        text = (
            f"mean {n.mean:.4g} · sd {n.std_dev:.4g} · median {n.median:.4g}<br>"
            f"<small>min {n.min:.4g} · max {n.max:.4g} · zeros {n.num_zeros:,}</small>"
        )
        return f"<td>{text}</td>"
    if feature.HasField("string_stats"):
        s = feature.string_stats
        total = s.common_stats.tot_num_values or 1
        top = ", ".join(
            f"{_e(v.value)} {v.frequency / total:.0%}" for v in s.top_values[:_TOP_VALUES]
        )
        return f"<td>{s.unique:,} unique<br><small>{top}</small></td>"
    return f"<td><small>{_e(feature.WhichOneof('stats') or 'no statistics')}</small></td>"


def _e(text: str) -> str:
    return html.escape(text, quote=True)
