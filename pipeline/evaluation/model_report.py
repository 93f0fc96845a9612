"""The model report: one self-contained HTML page per run (inline CSS and SVG, no script).

In reading order: the blessing's verdict and why; the metrics of the candidate, the wide part
alone, the trivial baseline and the served version on the eval split; the label kind's plots
(:mod:`pipeline.evaluation.plots`); the slice table, one per declared slice (rows, the blessing
metric of both models, the difference, and whether the key passed, failed or was not gated).
Every chart sits in a ``<figure data-figure=...>`` naming what it shows.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.evaluation import plots
from pipeline.evaluation.slice_gate import PASSED, SMALL, WORSE

DASH = "\N{EN DASH}"  # an unknown number
_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.worse { background: #fdd; } tr.ok { background: #f3fbf3; }
tr.small, tr.undefined { color: #666; }
.verdict { font-size: 1.15em; font-weight: bold; padding: .5em .75em; border: 1px solid #ccc; }
.verdict.blessed { background: #dfd; } .verdict.refused { background: #fdd; }
.verdict small { display: block; font-weight: normal; font-size: .8em; margin-top: .25em; }
small, .note { color: #666; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); gap: 1em; }
.card { border: 1px solid #ddd; padding: .25em .75em .75em; }
figure { margin: .25em 0; }
svg.chart { max-width: 100%; height: auto; }
details { margin: .5em 0; } summary { cursor: pointer; color: #444; }
"""


def render_html(evaluation: Mapping[str, Any], rows: Mapping[str, Any], title: str) -> str:
    """The page for an evaluation's JSON (with its ``blessing``) and its sampled ``rows``."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        _verdict(evaluation),
        _context(evaluation),
        _metrics_table(evaluation),
        _blessing_table(evaluation),
        _plots(evaluation, rows),
        _slices(evaluation),
        "</body></html>",
    ]
    return "\n".join(parts)


# ---- sections ------------------------------------------------------------------------------


def _verdict(evaluation: Mapping[str, Any]) -> str:
    blessing = evaluation["blessing"]
    served = blessing.get("baseline_version")
    if blessing["blessed"]:
        head, css = "Blessed", "blessed"
        then = "The push stage publishes it as the next served version."
    else:
        head, css = "Not blessed", "refused"
        then = (
            f"Nothing is pushed: version {served} stays served."
            if served is not None
            else "Nothing is pushed."
        )
    return (
        f'<p class="verdict {css}" data-blessed="{str(blessing["blessed"]).lower()}">'
        f"{head}: {_e(blessing['reason'])}.<small>{_e(then)}</small></p>"
    )


def _context(evaluation: Mapping[str, Any]) -> str:
    models = evaluation["models"]
    served = models.get("served")
    against = (
        f"the served version {served['version']} (<code>{_e(served['export_dir'])}</code>)"
        if served
        else "no served version (nothing pushed to this model base yet)"
    )
    return (
        f"<p>{_e(evaluation['dataset'])}: <code>{_e(evaluation['label'])}</code> "
        f"({_e(evaluation['kind'])}). {evaluation['rows']:,} eval rows from "
        f"<code>{_e(evaluation['split_dir'])}</code>, scored by each model's "
        f"<code>serving_default</code> on raw <code>tf.Example</code>s. The candidate "
        f"<code>{_e(models['candidate']['export_dir'])}</code> against {against}.</p>"
    )


def _metrics_table(evaluation: Mapping[str, Any]) -> str:
    names = evaluation["metric_names"]
    training = evaluation["training_stage"]
    models = evaluation["models"]
    rows = [
        ("candidate", "serving_default on the raw eval rows", models["candidate"]["metrics"]),
        ("candidate", "training stage, on the transformed eval split", training["model"]),
        ("wide part alone", "training stage", training["wide_only"]),
        (f"{training['trivial_baseline_name']} baseline", "training stage",
         training["trivial_baseline"]),
    ]  # fmt: skip
    if "served" in models:
        served = models["served"]
        rows.append(
            (f"served version {served['version']}", "serving_default on the same rows",
             served["metrics"])
        )  # fmt: skip
    head = _row(["model", "computed by", *names, "rows"], header=True)
    body = [
        _row([label, how, *[_Num(m.get(n)) for n in names], _Count(m.get("examples"))])
        for label, how, m in rows
        if m
    ]
    return f"<h2>Metrics on the eval split</h2><table>{head}{''.join(body)}</table>"


def _blessing_table(evaluation: Mapping[str, Any]) -> str:
    blessing = evaluation["blessing"]
    slices = blessing.get("slices") or {}
    metric = blessing["metric"]
    direction = "higher" if blessing["higher_is_better"] else "lower"
    rows = [
        ("blessing metric", f"{metric} ({direction} is better)"),
        ("candidate's eval value (training stage)", _fmt(blessing["value"])),
        ("floor it must beat", _fmt(blessing["floor"])),
        ("served version", _fmt(blessing.get("baseline_version"))),
        ("served version's recorded value", _fmt(blessing.get("baseline_value"))),
        ("tolerance (overall)", _fmt(blessing["tolerance"])),
        ("slice gate", "on" if slices.get("enabled", False) else "off"),
        ("slice tolerance", _fmt(slices.get("tolerance"))),
        ("slice keys gated", _fmt(slices.get("gated"))),
        ("slice verdict", slices.get("reason", "")),
    ]
    body = "".join(_row([k, v]) for k, v in rows)
    return f"<h2>Blessing</h2><table>{body}</table>"


def _plots(evaluation: Mapping[str, Any], rows: Mapping[str, Any]) -> str:
    kind = evaluation["kind"]
    per_model = {role: m["curves"] for role, m in evaluation["models"].items() if m["curves"]}
    if not per_model:
        return "<h2>Plots</h2><p>No eval rows.</p>"
    classes = evaluation["class_names"]
    figures: list[str] = []
    if kind == "binary":
        if "roc" in per_model["candidate"]:
            figures.append(_figure(plots.roc_chart(per_model), "roc"))
            figures.append(_figure(plots.precision_recall_chart(per_model), "precision_recall"))
        figures += _calibration(per_model, "probability of the positive class")
        figures += _confusions(per_model, classes, "at the decision threshold 0.5")
    elif kind == "multiclass":
        figures += _confusions(per_model, classes, "the argmax")
        per_class = per_model["candidate"]["per_class"]
        figures.append(_figure(plots.per_class_chart(per_class, classes), "per_class"))
        figures += _calibration(per_model, "probability of the top class")
    else:
        binned = {role: c["binned"] for role, c in per_model.items()}
        figures.append(_figure(plots.predicted_vs_actual_chart(rows, binned), "predicted_actual"))
        figures.append(_figure(plots.residuals_chart(rows, binned), "residuals"))
        figures.append(_figure(plots.residual_histogram_chart(per_model), "residual_histogram"))
    cards = "".join(f'<div class="card">{f}</div>' for f in figures)
    table = _per_class_table(evaluation) if kind == "multiclass" else ""
    return f'<h2>Plots</h2><div class="cards">{cards}</div>{table}'


def _calibration(per_model, what: str) -> list[str]:
    return [
        _figure(plots.calibration_chart(per_model, what), "calibration"),
        _figure(plots.calibration_counts_chart(per_model, what), "calibration_counts"),
    ]


def _confusions(per_model, classes, note: str) -> list[str]:
    return [
        _figure(plots.confusion_chart(c["confusion_matrix"], classes, role, note),
                "confusion_matrix", model=role)
        for role, c in per_model.items()
    ]  # fmt: skip


def _per_class_table(evaluation: Mapping[str, Any]) -> str:
    head = _row(["class", "model", "precision", "recall", "F1", "rows"], header=True)
    body = []
    for index, name in enumerate(evaluation["class_names"]):
        for role, model in evaluation["models"].items():
            per_class = model["curves"].get("per_class")
            if per_class:
                body.append(_row([
                    name, role, _Num(per_class["precision"][index]),
                    _Num(per_class["recall"][index]), _Num(per_class["f1"][index]),
                    _Count(per_class["support"][index]),
                ]))  # fmt: skip
    return f"<h3>Per class</h3><table>{head}{''.join(body)}</table>"


def _slices(evaluation: Mapping[str, Any]) -> str:
    comparison = evaluation["blessing"].get("slices")
    if not evaluation["slices"] or comparison is None:
        return "<h2>Slices</h2><p>The dataset declares no slices.</p>"
    metric, tolerance = comparison["metric"], comparison["tolerance"]
    parts = [
        "<h2>Slices</h2>",
        f'<p class="note">The {_e(metric)} of each slice key for both models on the same eval '
        f"rows. A key with at least its slice's minimum rows is gated: it fails when the "
        f"candidate is worse than the served model by more than {tolerance:g}. Smaller keys "
        "are reported, not gated.</p>",
    ]
    for one in evaluation["slices"]:
        rows = [r for r in comparison["keys"] if r["slice"] == one["name"]]
        gated = [r for r in rows if r["status"] in (PASSED, WORSE)]
        chart = ""
        if gated:
            svg = plots.slice_chart(one["name"], gated, metric, tolerance)
            chart = _figure(svg, "slice", slice=one["name"])
        big = [r for r in rows if r["examples"] >= one["min_examples"]]
        small = [r for r in rows if r["examples"] < one["min_examples"]]
        parts.append(
            f'<section data-slice="{_e(one["name"])}"><h3>{_e(one["name"])}: '
            f'{_e(one["description"])}</h3><p class="note">{len(rows)} keys, minimum '
            f"{one['min_examples']} rows to gate.</p>{chart}"
            f"{_slice_table(one['name'], big, metric)}"
        )
        if small:
            parts.append(
                f"<details><summary>{len(small)} keys with fewer than {one['min_examples']} "
                f"rows (not gated)</summary>{_slice_table(one['name'], small, metric)}</details>"
            )
        parts.append("</section>")
    return "".join(parts)


def _slice_table(name: str, rows: list[dict], metric: str) -> str:
    if not rows:
        return ""
    head = _row(
        ["key", "rows", f"{metric} candidate", f"{metric} served", "difference", "status"],
        header=True,
    )
    body = []
    for r in rows:
        status = r["status"]
        css = {WORSE: "worse", PASSED: "ok", SMALL: "small"}.get(status, "undefined")
        shown = "worse than served: flagged" if status == WORSE else status
        body.append(
            _row(
                [r["key"], _Count(r["examples"]), _Num(r["candidate"]), _Num(r["served"]),
                 _Num(r["difference"], signed=True), shown],
                css=css,
                data={"slice": name, "key": r["key"], "status": status},
            )
        )  # fmt: skip
    return f'<table data-slice-table="{_e(name)}">{head}{"".join(body)}</table>'


# ---- cells ---------------------------------------------------------------------------------


class _Num:
    """A number cell (4 decimals), right-aligned; None is a dash."""

    def __init__(self, value: Any, signed: bool = False):
        self.value, self.signed = value, signed

    def __str__(self) -> str:
        if not isinstance(self.value, int | float) or not math.isfinite(self.value):
            return DASH
        return f"{self.value:+.4f}" if self.signed else f"{self.value:.4f}"


class _Count(_Num):
    def __str__(self) -> str:
        return f"{int(self.value):,}" if isinstance(self.value, int | float) else DASH


def _row(
    cells: Iterable[object],
    header: bool = False,
    css: str = "",
    data: Mapping[str, str] | None = None,
) -> str:
    tag = "th" if header else "td"
    out = []
    for cell in cells:
        if isinstance(cell, _Num):
            out.append(f'<td class="num">{_e(str(cell))}</td>')
        else:
            out.append(f"<{tag}>{_e(str(cell))}</{tag}>")
    klass = f' class="{css}"' if css else ""
    attributes = "".join(f' data-{k}="{_e(str(v))}"' for k, v in (data or {}).items())
    return f"<tr{klass}{attributes}>{''.join(out)}</tr>"


def _figure(svg: str, figure: str, **data: str) -> str:
    attributes = "".join(f' data-{key}="{_e(value)}"' for key, value in data.items())
    return f'<figure data-figure="{figure}"{attributes}>{svg}</figure>'


def _fmt(value: Any) -> str:
    if value is None:
        return DASH
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)
