"""Bless an export and publish it as a new served version, atomically, or refuse to.

An export is blessed when its eval value of the blessing metric (the label kind's: AUC for
binary labels, macro-F1 for multi-class, RMSE for regression, see
:class:`pipeline.definition.Head`) beats a floor (by default the run's trivial baseline: the
majority class or the mean) and is not worse than the value the version served now recorded
(the newest one in the model base) by more than a tolerance. The push records that decision in
``<model_base>/<version>/blessing.json``, which is where the next push reads the served
version's value from. A version without a blessing for the same metric (pushed by hand) is
judged on the floor alone.

A decision may also carry a slice comparison (:mod:`pipeline.evaluation.slice_gate`: every
declared slice of the eval rows, the candidate against the served version on the same rows); a
failed one refuses the blessing whatever the overall value. The run's ``evaluate`` stage makes
the decision (:func:`judge`) and the ``push`` stage publishes it (:func:`publish`), which refuses
if the served version is no longer the one the decision compared with. :func:`push` does both at
once (the command line).

Publishing copies the export into a hidden staging directory inside the model base (same file
system, ignored by the server), checks the copy's digest, writes the blessing, then renames it to
``<model_base>/<version>``: the server sees the whole version or nothing, and a failed copy leaves
nothing at the target. Pure Python, no TensorFlow import.

    python -m pipeline.push --export-dir runs/LATEST/serving/<model>/<v> \\
        --model-base models/<model> --metric auc --value 0.91 [--floor 0.5] [--lower-is-better] \\
        [--tolerance 0.01] [--version N]

Exit status: 0 when pushed, 3 when not blessed (nothing changed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from pipeline import storage
from pipeline.serving.layout import (
    BLESSING_FILE,
    SAVED_MODEL_FILE,
    complete_versions,
    read_blessing,
    version_of,
)

EXIT_NOT_BLESSED = 3


@dataclasses.dataclass(frozen=True)
class BlessingRule:
    """How an eval value is judged: the metric, its direction, a floor and a tolerance."""

    metric: str
    higher_is_better: bool = True
    floor: float | None = None  # the value must beat it (strictly)
    tolerance: float = 0.01  # how much worse than the served value is still acceptable

    def better(self, value: float, than: float) -> bool:
        return value > than if self.higher_is_better else value < than

    def worse_by(self, value: float, served: float) -> float:
        return served - value if self.higher_is_better else value - served


@dataclasses.dataclass(frozen=True)
class PushDecision:
    """Whether the export was blessed, why, and where it went."""

    blessed: bool
    reason: str
    metric: str
    value: float
    higher_is_better: bool
    floor: float | None
    tolerance: float
    baseline_version: int | None = None
    baseline_value: float | None = None
    version: int | None = None
    version_dir: str | None = None
    # The slice comparison the decision took into account (pipeline.evaluation.slice_gate).
    slices: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        payload = dataclasses.asdict(self)
        payload["version_dir"] = str(self.version_dir) if self.version_dir else None
        return payload

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> PushDecision:
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in names})


def served_baseline(model_base: str | Path, metric: str) -> tuple[int | None, float | None]:
    """The newest complete version and the value of ``metric`` its push recorded."""
    versions = complete_versions(model_base)
    if not versions:
        return None, None
    newest = versions[-1]
    blessing = read_blessing(storage.join(model_base, str(newest))) or {}
    value = blessing.get("value") if blessing.get("metric") == metric else None
    valid = isinstance(value, int | float) and math.isfinite(value)
    return newest, float(value) if valid else None


def decide(value: float, rule: BlessingRule, served: float | None) -> tuple[bool, str]:
    """The blessing rule: beat the floor, and be no worse than the served value beyond the
    tolerance."""
    name = f"eval {rule.metric}"
    if not math.isfinite(value):
        return False, f"{name} {value} is not a number"
    if rule.floor is not None and not rule.better(value, rule.floor):
        return False, f"{name} {value:.4f} does not beat the floor {rule.floor:.4f}"
    if served is None:
        return True, f"{name} {value:.4f} beats the floor; no served {rule.metric} to compare"
    if rule.worse_by(value, served) > rule.tolerance:
        return False, (
            f"{name} {value:.4f} is worse than the served {served:.4f} "
            f"by more than {rule.tolerance:.4f}"
        )
    return True, f"{name} {value:.4f} vs served {served:.4f} (tolerance {rule.tolerance:.4f})"


def next_version(model_base: str | Path, export_dir: str | Path) -> int:
    """Above every numeric name in the base; the export's own number if that is higher.

    Exports are numbered by time (``pipeline.export``), so a pushed version keeps its export's
    number whenever it can, and a server always sees the new version as the newest.
    """
    taken = [version_of(name) for name in storage.listdir(model_base)]
    highest = max((v for v in taken if v is not None), default=0)
    return max(highest + 1, version_of(storage.basename(export_dir)) or 0)


def judge(
    value: float,
    rule: BlessingRule,
    baseline_version: int | None,
    baseline_value: float | None,
    slices: dict[str, Any] | None = None,
) -> PushDecision:
    """The decision on ``value`` against the floor and the served value, and, when given, the
    slice comparison (its ``passed`` and ``reason``); nothing is published."""
    blessed, reason = decide(value, rule, baseline_value)
    if slices is not None:
        if blessed and not slices["passed"]:
            blessed, reason = False, f"{reason}, but {slices['reason']}"
        elif blessed:
            reason = f"{reason}; {slices['reason']}"
    return PushDecision(
        blessed, reason, rule.metric, value, rule.higher_is_better, rule.floor, rule.tolerance,
        baseline_version, baseline_value, slices=slices,
    )  # fmt: skip


def push(
    export_dir: str | Path,
    model_base: str | Path,
    value: float,
    rule: BlessingRule,
    version: int | None = None,
) -> PushDecision:
    """Publish ``export_dir`` as ``<model_base>/<version>`` if it is blessed; see the module."""
    decision = judge(value, rule, *served_baseline(str(model_base), rule.metric))
    return publish(export_dir, model_base, decision, version)


def publish(
    export_dir: str | Path,
    model_base: str | Path,
    decision: PushDecision,
    version: int | None = None,
) -> PushDecision:
    """Publish a blessed decision's export as a new version (a refused one changes nothing).

    The decision compared with the version served when it was made; if another version is
    served now, it no longer holds and nothing is published (the decision says why).
    """
    export_dir, model_base = str(export_dir), str(model_base)
    if not storage.isfile(storage.join(export_dir, SAVED_MODEL_FILE)):
        raise FileNotFoundError(f"{export_dir} holds no {SAVED_MODEL_FILE}")
    if not decision.blessed:
        return decision
    versions = complete_versions(model_base)
    served = versions[-1] if versions else None
    if served != decision.baseline_version:
        return dataclasses.replace(
            decision,
            blessed=False,
            reason=f"the served version is now {served}, not the {decision.baseline_version} "
            "this blessing compared with: evaluate again",
        )
    storage.makedirs(model_base)
    version = version if version is not None else next_version(model_base, export_dir)
    if served is not None and version <= served:
        raise ValueError(f"version {version} is not newer than the served {served}")
    target = storage.join(model_base, str(version))
    decision = dataclasses.replace(decision, version=version, version_dir=target)
    _publish(export_dir, target, decision)
    return decision


def _publish(export_dir: str, target: str, decision: PushDecision) -> None:
    """Copy, verify, bless and publish; on any failure remove the staging copy."""
    if storage.exists(target):
        raise FileExistsError(f"{target} already exists; versions are never overwritten")
    staging = storage.staging_dir(target)
    try:
        storage.copytree(export_dir, staging)
        digest = storage.tree_digest(export_dir)
        if storage.tree_digest(staging) != digest:
            raise OSError(f"copy of {export_dir} does not match its source")
        blessing = {
            **decision.to_json(),
            "source": export_dir,
            "digest": digest,
            "pushed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        text = json.dumps(blessing, indent=2, sort_keys=True)
        storage.write_text_atomic(storage.join(staging, BLESSING_FILE), text)
        if storage.is_remote(target):
            # No rename in an object store: saved_model.pb lands last (see serving.layout).
            storage.publish_dir(staging, target, replace=False, last=(SAVED_MODEL_FILE,))
        else:
            os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the version from other users
            os.rename(staging, target)  # fails if a concurrent push took the name meanwhile
    except BaseException:
        storage.rmtree(staging)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.push",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--export-dir", required=True, help="a path or gs:// URI")
    parser.add_argument("--model-base", required=True, help="a path or gs:// URI")
    parser.add_argument("--metric", default="auc", help="name of the blessing metric")
    parser.add_argument("--value", type=float, required=True, help="its eval value")
    parser.add_argument(
        "--lower-is-better", action="store_true", help="e.g. for rmse (default: higher wins)"
    )
    parser.add_argument("--floor", type=float, help="the value must beat this")
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--version", type=int, help="default: newer than anything in the base")
    args = parser.parse_args(argv)
    rule = BlessingRule(args.metric, not args.lower_is_better, args.floor, args.tolerance)
    decision = push(args.export_dir, args.model_base, args.value, rule, args.version)
    json.dump(decision.to_json(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if decision.blessed else EXIT_NOT_BLESSED


if __name__ == "__main__":
    sys.exit(main())
