"""The whole pipeline, as a user runs it: stage seconds and wall time of ``python -m pipeline.run``.

    python bench/whole_run.py [--synthetic-rows 1000000] [--rounds 2] [--repo DIR ...]

Each round runs ``python -m pipeline.run --runner DirectRunner`` on the default dataset's shipped
sample and, with ``--synthetic-rows N``, on a warehouse of N synthetic rows (built once through
``python -m pipeline.data synthetic`` and cached under ``data/bench``), each time in a fresh
runs and models directory, so no served version changes what the evaluate stage does. With
several ``--repo`` checkouts (e.g. a worktree of the previous commit) the rounds alternate
between them, so the code being compared runs back to back on the same machine load.

One JSON line per run: the stages' seconds, their sum, the wall time, the eval metric, the
1-minute load average before the run and a digest of the SHA-256 of every artifact in the run
manifest but the evaluation's (equal digests: the same bytes). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "data" / "bench"


def synthetic_warehouse(repo: Path, rows: int, seed: int = 7) -> Path:
    """A cached warehouse file of ``rows`` synthetic rows of the default dataset."""
    CACHE.mkdir(parents=True, exist_ok=True)
    db = CACHE / f"whole-run-{rows}-{seed}.duckdb"
    if not db.exists():
        subprocess.run(
            [sys.executable, "-m", "pipeline.data", "synthetic", "--rows", str(rows),
             "--seed", str(seed), "--db", str(db)],
            cwd=repo, check=True, env=_env(repo),
        )  # fmt: skip
    return db


def _env(repo: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(repo), "PYTHONWARNINGS": "ignore::FutureWarning"}


def run_once(repo: Path, label: str, extra: list[str], keep_dir: Path | None = None) -> dict:
    """One ``pipeline.run`` in a fresh runs directory; its stage seconds from the manifest.

    With ``keep_dir`` the runs and models directories are made under it and kept.
    """
    with _fresh_dir(keep_dir) as tmp:
        load = os.getloadavg()[0]
        started = time.perf_counter()
        completed = subprocess.run(
            [sys.executable, "-m", "pipeline.run", "--runner", "DirectRunner",
             "--runs-dir", f"{tmp}/runs", "--models-dir", f"{tmp}/models", "--run-id", "bench",
             "--data-dir", str(REPO / "data"), *extra],
            cwd=repo, env=_env(repo), capture_output=True, text=True, check=False,
        )  # fmt: skip
        wall = time.perf_counter() - started
        if completed.returncode != 0:
            raise SystemExit(f"{label} failed in {repo}:\n{completed.stderr[-3000:]}")
        manifest = json.loads(Path(f"{tmp}/runs/bench/manifest.json").read_text())
    stages = {name: record["seconds"] for name, record in manifest["stages"].items()}
    # The evaluation's artifacts name the export's version (a time): not a function of the inputs.
    artifacts = sorted(
        (name, record["sha256"])
        for name, record in manifest["artifacts"].items()
        if not name.startswith("evaluation/")
    )
    evaluated = manifest["metrics"]["eval"]
    metric = next((k, v) for k, v in evaluated.items() if k != "examples")
    return {
        "data": label,
        "repo": str(repo),
        "load_average_1m": round(load, 2),
        "stages_s": {name: round(seconds, 1) for name, seconds in stages.items()},
        "sum_of_stages_s": round(sum(stages.values()), 1),
        "wall_s": round(wall, 1),
        f"eval_{metric[0]}": metric[1],
        "artifacts_sha256": hashlib.sha256(json.dumps(artifacts).encode()).hexdigest()[:16],
        **({"run_dir": f"{tmp}/runs/bench"} if keep_dir else {}),
    }


def _fresh_dir(keep_dir: Path | None):
    """A temporary directory, or a new one under ``keep_dir`` that stays."""
    if keep_dir is None:
        return tempfile.TemporaryDirectory()
    keep_dir.mkdir(parents=True, exist_ok=True)
    return contextlib.nullcontext(tempfile.mkdtemp(dir=keep_dir))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic-rows", type=int, default=0, help="0: the sample only")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--repo", type=Path, action="append", help="checkout(s) to run (default: this one)"
    )
    parser.add_argument("--keep-dir", type=Path, help="keep each run's directories under this")
    args = parser.parse_args()
    repos = [path.resolve() for path in args.repo or [REPO]]
    inputs = [("sample", [])]
    if args.synthetic_rows:
        db = synthetic_warehouse(REPO, args.synthetic_rows)
        inputs.append((f"{args.synthetic_rows} synthetic rows", ["--db", str(db)]))
    for _ in range(args.rounds):
        for label, extra in inputs:
            for repo in repos:
                print(json.dumps(run_once(repo, label, extra, args.keep_dir)), flush=True)


if __name__ == "__main__":
    main()
