"""The model report's charts, drawn with :mod:`pipeline.charts` from the evaluation's JSON.

Each function takes what :mod:`pipeline.evaluation.curves` computed per model (``candidate`` and,
when a version is served, ``served``) and returns one inline SVG; every mark carries the numbers
it draws (``data-points``, ``data-value``, ...), so a test reads the chart back from the DOM.
The candidate is drawn solid in the first palette color, the served model dashed in the second.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pipeline import charts

CANDIDATE, SERVED = "candidate", "served"
COLORS = {CANDIDATE: charts.PALETTE[0], SERVED: charts.PALETTE[1]}
# Per-bin means drawn over a scatter of the candidate's rows: dark, to stand out from the dots.
MEAN_COLORS = {CANDIDATE: "#222", SERVED: charts.PALETTE[5]}
UNIT = (0.0, 1.0)


def _line(role: str, points, markers: bool = False) -> charts.Line:
    pairs = [(float(x), float(y)) for x, y in points]
    return charts.Line(role, pairs, COLORS[role], dashed=role == SERVED, markers=markers)


def roc_chart(per_model: Mapping[str, dict]) -> str:
    lines = [_line(role, c["roc"]) for role, c in per_model.items() if "roc" in c]
    return charts.line_chart(
        lines,
        title="ROC curve",
        x_label="false positive rate",
        y_label="true positive rate",
        description="True against false positive rate over every decision threshold; the "
        "dashed diagonal is a model that guesses.",
        x_range=UNIT,
        y_range=UNIT,
        diagonal=True,
    )


def precision_recall_chart(per_model: Mapping[str, dict]) -> str:
    lines = [_line(role, c["precision_recall"]) for role, c in per_model.items() if "roc" in c]
    share = next(iter(per_model.values())).get("positive_share")
    return charts.line_chart(
        lines,
        title="Precision-recall curve",
        x_label="recall",
        y_label="precision",
        description="Precision against recall over every decision threshold; the reference "
        f"line is the share of positives ({share:.3f}), what guessing gives.",
        x_range=UNIT,
        y_range=UNIT,
        references=[share] if share is not None else [],
    )


def calibration_chart(per_model: Mapping[str, dict], what: str) -> str:
    lines = []
    for role, c in per_model.items():
        cal = c["calibration"]
        points = [
            (p, s)
            for p, s in zip(cal["mean_predicted"], cal["observed_share"], strict=True)
            if p is not None
        ]
        lines.append(_line(role, points, markers=True))
    return charts.line_chart(
        lines,
        title="Reliability diagram",
        x_label=f"mean predicted {what} (per bin)",
        y_label="observed share",
        description=f"Per bin of the predicted {what}: its mean against how often the outcome "
        "happened; a calibrated model lies on the diagonal.",
        x_range=UNIT,
        y_range=UNIT,
        diagonal=True,
    )


def calibration_counts_chart(per_model: Mapping[str, dict], what: str) -> str:
    roles = list(per_model)
    edges = per_model[roles[0]]["calibration"]["edges"]
    series = [
        charts.Series(role, [float(n) for n in per_model[role]["calibration"]["counts"]],
                      COLORS[role])
        for role in roles
    ]  # fmt: skip
    return charts.histogram(
        edges,
        series,
        title="Rows per bin",
        value_label="rows",
        bin_label=f"predicted {what}",
        description="How many eval rows fall in each bin of the reliability diagram.",
        value_format=charts.format_number,
    )


def confusion_chart(matrix: Sequence[Sequence[int]], class_names: Sequence[str], role: str,
                    note: str) -> str:  # fmt: skip
    shares = [[v / max(sum(row), 1) for v in row] for row in matrix]
    return charts.heatmap(
        list(class_names),
        list(class_names),
        [[float(v) for v in row] for row in matrix],
        title=f"Confusion matrix ({role})",
        row_label="actual class (rows)",
        column_label="predicted class",
        description=f"Rows per actual (row) and predicted (column) class, {note}; the shade is "
        "the share of the actual class's rows.",
        shades=shares,
        color=COLORS[role],
        value_format=_count,
    )


def _count(value: float) -> str:
    return f"{value:,.0f}"


def per_class_chart(per_class: Mapping[str, list], class_names: Sequence[str]) -> str:
    series = [
        charts.Series(name, [float(v) for v in per_class[name]], color)
        for name, color in zip(("precision", "recall", "f1"), charts.PALETTE, strict=False)
    ]
    return charts.bar_chart(
        list(class_names),
        series,
        title="Precision, recall and F1 per class (candidate)",
        value_label="score",
        description="One-vs-rest precision, recall and F1 of the argmax, per class.",
        value_range=UNIT,
    )


def _means(role: str, points) -> charts.Line:
    return charts.Line(f"{role} bin means", points, MEAN_COLORS[role], dashed=role == SERVED,
                       markers=True)  # fmt: skip


def predicted_vs_actual_chart(rows: Mapping[str, Any], binned: Mapping[str, list]) -> str:
    lines = [
        charts.Line(
            CANDIDATE,
            list(zip(rows["predictions"][CANDIDATE], rows["labels"], strict=True)),
            COLORS[CANDIDATE],
            markers=True,
            connect=False,
        )
    ]
    for role, bins in binned.items():
        points = [(b["mean_prediction"], b["mean_actual"]) for b in bins]
        lines.append(_means(role, points))
    return charts.line_chart(
        lines,
        title="Predicted against actual",
        x_label="prediction",
        y_label="actual",
        description=f"{len(rows['rows'])} eval rows (a fixed sample) of the candidate, and per "
        "decile of the prediction the mean actual value; the diagonal is a perfect model.",
        diagonal=True,
        width=520,
        height=360,
    )


def residuals_chart(rows: Mapping[str, Any], binned: Mapping[str, list]) -> str:
    residuals = [
        (p, y - p) for p, y in zip(rows["predictions"][CANDIDATE], rows["labels"], strict=True)
    ]
    lines = [charts.Line(CANDIDATE, residuals, COLORS[CANDIDATE], markers=True, connect=False)]
    for role, bins in binned.items():
        points = [(b["mean_prediction"], b["mean_residual"]) for b in bins]
        lines.append(_means(role, points))
    return charts.line_chart(
        lines,
        title="Residuals against the prediction",
        x_label="prediction",
        y_label="residual (actual - prediction)",
        description="The candidate's residual per sampled eval row, and per decile of the "
        "prediction the mean residual of each model; an unbiased model stays around 0.",
        references=[0.0],
        width=520,
        height=360,
    )


def residual_histogram_chart(per_model: Mapping[str, dict]) -> str:
    histogram = per_model[CANDIDATE]["residual_histogram"]
    return charts.histogram(
        histogram["edges"],
        [charts.Series(CANDIDATE, [float(n) for n in histogram["counts"]], COLORS[CANDIDATE])],
        title="Residual histogram (candidate)",
        value_label="rows",
        bin_label="residual (actual - prediction)",
        description="How many eval rows have a residual in each of 20 equal-width bins.",
        value_format=charts.format_number,
    )


def slice_chart(name: str, rows: Sequence[dict], metric: str, tolerance: float) -> str:
    """The blessing metric per gated key of one slice, candidate beside served."""
    keys = [str(r["key"]) for r in rows]
    series = [charts.Series(CANDIDATE, [r["candidate"] for r in rows], COLORS[CANDIDATE])]
    if any(r["served"] is not None for r in rows):
        series.append(charts.Series(SERVED, [r["served"] for r in rows], COLORS[SERVED]))
    worse = {str(r["key"]) for r in rows if r["status"] == "worse"}
    return charts.bar_chart(
        keys,
        series,
        title=f"{metric} per {name}",
        value_label=metric,
        description=f"The {metric} of each {name} with enough rows to gate; a candidate bar in "
        f"red is worse than the served model's by more than {tolerance:g}.",
        horizontal=True,
        highlight=lambda series_name, key, _value: series_name == CANDIDATE and key in worse,
        value_labels=True,
        width=560,
    )
