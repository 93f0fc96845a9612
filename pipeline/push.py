"""Bless an export and publish it as a new served version, atomically, or refuse to.

An export is blessed when its eval AUC is above a floor and not worse than the AUC of the
version served now (the newest one in the model base) by more than a tolerance. The push
records that decision in ``<model_base>/<version>/blessing.json``, which is where the next push
reads the served version's AUC from. A version without a blessing (pushed by hand) is judged
on the floor alone.

Publishing copies the export into a hidden staging directory inside the model base (same file
system, ignored by the server), checks the copy's digest, writes the blessing, then renames it to
``<model_base>/<version>``: the server sees the whole version or nothing, and a failed copy leaves
nothing at the target. Pure Python, no TensorFlow import.

    python -m pipeline.push --export-dir runs/LATEST/serving/taxi/<v> --model-base models/taxi \\
        --eval-auc 0.91 [--auc-floor 0.5] [--tolerance 0.01] [--version N]

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
class PushDecision:
    """Whether the export was blessed, why, and where it went."""

    blessed: bool
    reason: str
    eval_auc: float
    auc_floor: float
    tolerance: float
    baseline_version: int | None = None
    baseline_auc: float | None = None
    version: int | None = None
    version_dir: str | None = None

    def to_json(self) -> dict[str, Any]:
        payload = dataclasses.asdict(self)
        payload["version_dir"] = str(self.version_dir) if self.version_dir else None
        return payload


def served_baseline(model_base: str | Path) -> tuple[int | None, float | None]:
    """The newest complete version and the eval AUC its push recorded (None if unknown)."""
    versions = complete_versions(model_base)
    if not versions:
        return None, None
    newest = versions[-1]
    blessing = read_blessing(storage.join(model_base, str(newest))) or {}
    auc = blessing.get("eval_auc")
    valid = isinstance(auc, int | float) and math.isfinite(auc)
    return newest, float(auc) if valid else None


def decide(
    eval_auc: float, auc_floor: float, tolerance: float, baseline_auc: float | None
) -> tuple[bool, str]:
    """The blessing rule: above the floor, and no worse than the baseline beyond ``tolerance``."""
    if not math.isfinite(eval_auc):
        return False, f"eval AUC {eval_auc} is not a number"
    if eval_auc <= auc_floor:
        return False, f"eval AUC {eval_auc:.4f} is not above the floor {auc_floor:.4f}"
    if baseline_auc is None:
        return True, f"eval AUC {eval_auc:.4f} is above the floor; no served AUC to compare"
    if eval_auc < baseline_auc - tolerance:
        return False, (
            f"eval AUC {eval_auc:.4f} is worse than the served {baseline_auc:.4f} "
            f"by more than {tolerance:.4f}"
        )
    return True, f"eval AUC {eval_auc:.4f} vs served {baseline_auc:.4f} (tolerance {tolerance:.4f})"


def next_version(model_base: str | Path, export_dir: str | Path) -> int:
    """Above every numeric name in the base; the export's own number if that is higher.

    Exports are numbered by time (``pipeline.export``), so a pushed version keeps its export's
    number whenever it can, and a server always sees the new version as the newest.
    """
    taken = [version_of(name) for name in storage.listdir(model_base)]
    highest = max((v for v in taken if v is not None), default=0)
    return max(highest + 1, version_of(storage.basename(export_dir)) or 0)


def push(
    export_dir: str | Path,
    model_base: str | Path,
    eval_auc: float,
    auc_floor: float,
    tolerance: float,
    version: int | None = None,
) -> PushDecision:
    """Publish ``export_dir`` as ``<model_base>/<version>`` if it is blessed; see the module."""
    export_dir, model_base = str(export_dir), str(model_base)
    if not storage.isfile(storage.join(export_dir, SAVED_MODEL_FILE)):
        raise FileNotFoundError(f"{export_dir} holds no {SAVED_MODEL_FILE}")
    baseline_version, baseline_auc = served_baseline(model_base)
    blessed, reason = decide(eval_auc, auc_floor, tolerance, baseline_auc)
    decision = PushDecision(
        blessed, reason, eval_auc, auc_floor, tolerance, baseline_version, baseline_auc
    )
    if not blessed:
        return decision
    storage.makedirs(model_base)
    version = version if version is not None else next_version(model_base, export_dir)
    if baseline_version is not None and version <= baseline_version:
        raise ValueError(f"version {version} is not newer than the served {baseline_version}")
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
    parser.add_argument("--eval-auc", type=float, required=True)
    parser.add_argument("--auc-floor", type=float, default=0.5, help="the majority baseline's")
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--version", type=int, help="default: newer than anything in the base")
    args = parser.parse_args(argv)
    decision = push(
        args.export_dir,
        args.model_base,
        args.eval_auc,
        args.auc_floor,
        args.tolerance,
        args.version,
    )
    json.dump(decision.to_json(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0 if decision.blessed else EXIT_NOT_BLESSED


if __name__ == "__main__":
    sys.exit(main())
