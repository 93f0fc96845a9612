"""The slice gate: no declared slice may get worse than the served model by more than a tolerance.

Both models are judged on the same eval rows, slice key by slice key, on the blessing metric of
the label kind (its direction too: a higher AUC or macro-F1 is better, a lower RMSE). A key is
*gated* when it has at least its slice's ``min_examples`` rows and both values are numbers (an
AUC of a key whose rows all have one class is undefined); every other key is reported only. The
gate fails when some gated key is worse than the served model's by more than the tolerance (in the
metric's units). Without a served version, or with the gate off, it passes and says why.

Pure Python on the evaluation's JSON (:meth:`pipeline.evaluation.evaluator.Evaluation.to_json`),
so the decision can be re-derived from ``evaluation/metrics.json`` alone.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from pipeline.push import BlessingRule

DEFAULT_SLICE_TOLERANCE = 0.05

# A key's status in the comparison.
WORSE = "worse"  # gated, and worse than the served model by more than the tolerance
PASSED = "ok"  # gated, and within the tolerance (or better)
SMALL = "too few rows"  # below the slice's min_examples: reported, not gated
UNDEFINED = "undefined"  # the metric is not a number for one of the models
NOT_COMPARED = "no served model"


@dataclasses.dataclass(frozen=True)
class SliceGate:
    """The gate's settings: whether it decides, and how much worse a slice may get."""

    enabled: bool = True
    tolerance: float = DEFAULT_SLICE_TOLERANCE


def compare_slices(evaluation: dict[str, Any], gate: SliceGate) -> dict[str, Any]:
    """Every slice key of ``evaluation``, compared; ``passed`` and ``reason`` say the verdict."""
    metric = evaluation["blessing_metric"]
    rule = BlessingRule(metric, evaluation["higher_is_better"], tolerance=gate.tolerance)
    served = evaluation["models"].get("served")
    rows = [
        _compare_key(one_slice, key, metric, rule, served is not None)
        for one_slice in evaluation["slices"]
        for key in one_slice["keys"]
    ]
    worse = [r for r in rows if r["status"] == WORSE]
    gated = [r for r in rows if r["status"] in (WORSE, PASSED)]
    passed, reason = _verdict(gate, served, metric, worse, gated)
    return {
        "enabled": gate.enabled,
        "tolerance": gate.tolerance,
        "metric": metric,
        "higher_is_better": rule.higher_is_better,
        "served_version": served.get("version") if served else None,
        "passed": passed,
        "reason": reason,
        "gated": len(gated),
        "worse": [f"{r['slice']}={r['key']}" for r in worse],
        "keys": rows,
    }


def _compare_key(one_slice: dict, key: dict, metric: str, rule: BlessingRule, served: bool):
    candidate = key["candidate"].get(metric)
    served_value = key["served"].get(metric) if served else None
    row = {
        "slice": one_slice["name"],
        "key": key["key"],
        "examples": key["examples"],
        "min_examples": one_slice["min_examples"],
        "candidate": candidate,
        "served": served_value,
        "difference": None,
    }
    if not served:
        return {**row, "status": NOT_COMPARED}
    if not (_number(candidate) and _number(served_value)):
        return {**row, "status": UNDEFINED}
    row["difference"] = round(candidate - served_value, 6)
    if key["examples"] < one_slice["min_examples"]:
        return {**row, "status": SMALL}
    worse = rule.worse_by(candidate, served_value) > rule.tolerance
    return {**row, "status": WORSE if worse else PASSED}


def _verdict(gate: SliceGate, served, metric: str, worse: list, gated: list) -> tuple[bool, str]:
    if served is None:
        return True, "no served version to compare the slices with"
    described = ", ".join(
        f"{r['slice']}={r['key']} {metric} {r['candidate']:.4f} vs served {r['served']:.4f}"
        for r in worse[:5]
    ) + (f" (+{len(worse) - 5} more)" if len(worse) > 5 else "")
    if not gate.enabled:
        note = f"; {len(worse)} would fail it" if worse else ""
        return True, f"the slice gate is off{note}"
    if worse:
        return False, (
            f"{len(worse)} of {len(gated)} gated slices are worse than the served version "
            f"{served.get('version')} by more than {gate.tolerance:.4f}: {described}"
        )
    return True, (
        f"no slice worse than the served version {served.get('version')} by more than "
        f"{gate.tolerance:.4f} ({len(gated)} gated)"
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
