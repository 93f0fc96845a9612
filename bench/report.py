"""Every performance target of the pipeline, measured in one run and reported against its goal.

    python bench/report.py [--rows 1000000] [--output report.json] [--quick]

Runs the other benchmarks one after the other, each in its own process, on this machine in
the same minutes, and prints one table (and, with ``--output``, the JSON behind it):

* the transform stage at 1,000 and ``--rows`` rows against the NumPy + tfx_bsl floor measured
  right before it (``bench/transform_speed.py``), with peak RSS;
* the analysis fixed cost at 1,000 rows: seconds, fused Beam stages, TF graphs, traces of
  ``preprocessing_fn``, Beam applies and pickles (``bench/transform_fixed_cost.py``);
* ``python -m pipeline.run`` end to end on the sample and on ``--rows`` synthetic rows
  (``bench/whole_run.py``), with the eval metric and a digest of every artifact;
* the training input pipeline against the model's consumption, on the sample run's transform
  output (``bench/input_pipeline.py``).

``--quick`` (a smoke test of this script: 20,000 rows, short measurements) is not a measurement.
Nothing is asserted: a target not met is reported as such.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def json_documents(text: str) -> list[dict]:
    """The JSON objects a benchmark printed, each starting at the beginning of a line."""
    decoder, documents, position = json.JSONDecoder(), [], 0
    while (start := text.find("{", position)) >= 0:
        if start and text[start - 1] != "\n":
            position = start + 1
            continue
        try:
            document, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            position = start + 1
            continue
        documents.append(document)
        position = end
    return documents


def run_bench(script: str, *args: str) -> list[dict]:
    """Run ``bench/<script>`` in a process of its own; the JSON objects it printed."""
    command = [sys.executable, str(BENCH / script), *args]
    print("$", " ".join(command[1:]), file=sys.stderr, flush=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore::FutureWarning"}
    completed = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise SystemExit(f"{script} failed:\n{completed.stderr[-3000:]}")
    return json_documents(completed.stdout)


def transform_against_floor(rows: list[int]) -> list[dict]:
    documents = run_bench("transform_speed.py", *[f"--rows={n}" for n in rows])
    return [d for d in documents if "stage_vs_floor" in d]


def analysis_fixed_cost() -> dict:
    (report,) = run_bench("transform_fixed_cost.py", "--rows", "1000")
    analysis = next(p for p in report["pipelines"] if p["job"] == "transform analysis")
    return {
        "analysis_s": report["analyze_s"],
        "analysis_build_s": analysis["build_s"],
        "analysis_run_s": analysis["run_s"],
        "fused_stages": report["fused_stages"],
        "tf_graphs": report.get("tf_graphs", 0),
        "preprocessing_fn_traces": report.get("preprocessing_fn", 0),
        "beam_applies": report.get("beam_apply", 0),
        "pickles": report.get("pickles", 0),
    }


def whole_runs(rows: int, keep_dir: Path) -> list[dict]:
    return run_bench("whole_run.py", "--synthetic-rows", str(rows), "--keep-dir", str(keep_dir))


def input_against_model(transform_dir: Path, seconds: float) -> dict:
    (report,) = run_bench(
        "input_pipeline.py", "--transform-dir", str(transform_dir),
        "--seconds", str(seconds), "--rounds", "3",
    )  # fmt: skip
    return {
        "examples_per_second": report["examples_per_second"],
        "input_vs_model": report["input_vs_model"],
        "pipeline_overhead": report["pipeline_overhead"],
    }


def targets(report: dict) -> list[tuple[str, str, str, bool]]:
    """(what, measured, goal, met) for each number; the goals are for 1,000,000 rows."""
    rows = []
    for size in report["transform"]:
        ratio, at_goal_size = size["stage_vs_floor"], size["rows"] == 1_000_000
        rows.append((f"transform of {size['rows']:,} rows vs floor", f"{ratio:.3f}x",
                     "<= 2x" if at_goal_size else "", ratio <= 2.0))  # fmt: skip
        rows.append((f"peak RSS of that transform (floor's: {size['floor_peak_rss_gb']:.2f} GB)",
                     f"{size['stage_peak_rss_gb']:.2f} GB", "", True))  # fmt: skip
    fixed = report["fixed_cost"]
    rows.append(("analysis of 1,000 rows", f"{fixed['analysis_s']:.1f} s", "< 6 s",
                 fixed["analysis_s"] < 6))  # fmt: skip
    rows.append(("its fused Beam stages / TF graphs / preprocessing_fn traces",
                 f"{fixed['fused_stages']} / {fixed['tf_graphs']} / "
                 f"{fixed['preprocessing_fn_traces']}", "", True))  # fmt: skip
    for name, ratio in report["input"]["input_vs_model"].items():
        rows.append((f"input ({name}) vs model", f"{ratio:.2f}x", ">= 1.5x", ratio >= 1.5))
    goals = {"sample": 45, "1000000 synthetic rows": 90}
    for run in report["whole_run"]:
        goal, total = goals.get(run["data"]), run["sum_of_stages_s"]
        rows.append((f"whole run, {run['data']}", f"{total:.1f} s of stages",
                     f"< {goal} s" if goal else "", goal is not None and total < goal))  # fmt: skip
    return rows


def print_table(rows: list[tuple[str, str, str, bool]]) -> None:
    print("| target | measured | goal | met |")
    print("| --- | --- | --- | --- |")
    for what, measured, goal, met in rows:
        verdict = "-" if not goal else "yes" if met else "no"
        print(f"| {what} | {measured} | {goal or '-'} | {verdict} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--output", type=Path, help="also write the JSON report here")
    parser.add_argument("--quick", action="store_true", help="20,000 rows, short measurements")
    args = parser.parse_args()
    rows, seconds = (20_000, 1.0) if args.quick else (args.rows, 4.0)
    with tempfile.TemporaryDirectory() as tmp:
        report = {
            "load_average_1m": round(os.getloadavg()[0], 2),
            "cpu_count": os.cpu_count(),
            "transform": transform_against_floor([1_000, rows]),
            "fixed_cost": analysis_fixed_cost(),
            "whole_run": whole_runs(rows, Path(tmp)),
        }
        sample = Path(report["whole_run"][0]["run_dir"])
        report["input"] = input_against_model(sample / "transform", seconds)
    report["targets"] = [
        {"target": what, "measured": measured, "goal": goal, "met": met}
        for what, measured, goal, met in targets(report)
    ]
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    print_table(targets(report))


if __name__ == "__main__":
    main()
