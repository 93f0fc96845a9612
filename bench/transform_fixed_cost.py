"""The transform stage's fixed cost: what it does per run whatever the number of rows.

    python bench/transform_fixed_cost.py [--rows 1000] [--dataset NAME] [--repeat 2]

Runs ``pipeline.transform.run_transform`` in this process on a small train split of synthetic
rows (``bench/synthetic_splits.py``) and counts, per Beam pipeline (analysis; transform):

* ``fused_stages``: the stages Beam's FnApiRunner executes (each one costs bundle set-up,
  coders and side-input materialization, whatever its size);
* ``build_s`` / ``run_s``: seconds spent building the pipeline (tracing ``preprocessing_fn``,
  TFT's analysis planning, Beam's ``apply``) and running it;
* over the whole stage: TensorFlow graphs created (``tf.Graph``, including ``tf.function``
  traces), calls of ``preprocessing_fn``, Beam ``apply`` calls and pickles.

Nothing is asserted: the numbers are what the README's Benchmarks section reports. With
``--repeat`` the stage runs again in the same process (the second run shows what a process
that already imported and warmed TensorFlow pays). ``--tf2-tracing`` runs the stage as TFT
does by default, tracing ``preprocessing_fn`` as tf.functions instead of one TF1 graph
(``pipeline.transform.TF_COMPAT_V1``), for comparison in the same session.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


class Counters:
    """Counts calls of a few library functions while the stage runs (patched in place)."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.pipelines: list[dict] = []
        self.seconds: dict[str, float] = {}
        self._pipeline_started: float | None = None

    @contextlib.contextmanager
    def installed(self):
        import apache_beam as beam
        import tensorflow as tf
        from apache_beam.internal import pickler
        from apache_beam.runners.portability.fn_api_runner import fn_runner

        import pipeline.transform as transform_module
        from transforms import preprocessing

        patches = []

        def patch(owner, name, wrapper_factory):
            original = getattr(owner, name)
            setattr(owner, name, wrapper_factory(original))
            patches.append((owner, name, original))

        def counting(key):
            def factory(original):
                def wrapper(*args, **kwargs):
                    self.calls[key] += 1
                    return original(*args, **kwargs)

                return wrapper

            return factory

        def run_stages_factory(original):
            def run_stages(runner, stage_context, stages):
                self.pipelines[-1]["fused_stages"] = len(stages)
                if os.environ.get("BENCH_STAGE_NAMES"):
                    self.pipelines[-1]["stage_names"] = [s.name[:150] for s in stages]
                return original(runner, stage_context, stages)

            return run_stages

        def run_pipeline_factory(original):
            def run_pipeline(pipeline, job):
                started = time.perf_counter()
                built = started - (self._pipeline_started or started)
                self.pipelines.append({"job": job, "build_s": round(built, 2)})
                try:
                    return original(pipeline, job)
                finally:
                    self.pipelines[-1]["run_s"] = round(time.perf_counter() - started, 2)
                    self._pipeline_started = time.perf_counter()

            return run_pipeline

        def make_preprocessing_fn_factory(original):
            def make(dataset, *args, **kwargs):
                fn = original(dataset, *args, **kwargs)

                def counted(inputs):
                    # Beam runs TFT's tracing inside its stages on an unpickled copy of this
                    # function: count in a process-wide place, not on ``self``.
                    import sys

                    sys.preprocessing_fn_calls = getattr(sys, "preprocessing_fn_calls", 0) + 1
                    return fn(inputs)

                return counted

            return make

        def timed(key):
            def factory(original):
                def wrapper(*args, **kwargs):
                    started, cpu = time.perf_counter(), time.process_time()
                    try:
                        return original(*args, **kwargs)
                    finally:
                        self.seconds[key] = round(time.perf_counter() - started, 2)
                        self.seconds[key.replace("_s", "_cpu_s")] = round(
                            time.process_time() - cpu, 2
                        )

                return wrapper

            return factory

        patch(tf.Graph, "__init__", counting("tf_graphs"))
        patch(transform_module, "analyze", timed("analyze_s"))
        patch(transform_module, "transform_splits", timed("transform_splits_s"))
        patch(beam.Pipeline, "apply", counting("beam_apply"))
        patch(pickler, "dumps", counting("pickles"))
        patch(fn_runner.FnApiRunner, "run_stages", run_stages_factory)
        patch(transform_module, "run_pipeline", run_pipeline_factory)
        patch(transform_module, "make_preprocessing_fn", make_preprocessing_fn_factory)
        patch(preprocessing, "make_preprocessing_fn", make_preprocessing_fn_factory)
        try:
            yield self
        finally:
            for owner, name, original in reversed(patches):
                setattr(owner, name, original)

    def start(self) -> None:
        self._pipeline_started = time.perf_counter()


def measure(dataset_name: str | None, split: Path, out_dir: Path) -> dict:
    from pipeline.datasets import get_dataset
    from pipeline.transform import run_transform

    dataset = get_dataset(dataset_name)
    counters = Counters()
    with counters.installed():
        counters.start()
        started = time.perf_counter()
        run_transform(dataset, {"train": split}, out_dir, ["--runner", "DirectRunner"])
        seconds = time.perf_counter() - started
    counters.calls["preprocessing_fn"] = getattr(sys, "preprocessing_fn_calls", 0)
    sys.preprocessing_fn_calls = 0
    return {
        "seconds": round(seconds, 2),
        "pipelines": counters.pipelines,
        "fused_stages": sum(p.get("fused_stages", 0) for p in counters.pipelines),
        **counters.seconds,
        **dict(counters.calls),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--dataset", help="a dataset with a synthetic.py (default: the default)")
    parser.add_argument("--repeat", type=int, default=1, help="runs in this process")
    parser.add_argument(
        "--tf2-tracing", action="store_true", help="TFT's default graph mode, for comparison"
    )
    args = parser.parse_args()

    from synthetic_splits import synthetic_split

    import pipeline.transform  # (pipeline sets TF_USE_LEGACY_KERAS before TensorFlow loads)

    pipeline.transform.TF_COMPAT_V1 = not args.tf2_tracing

    with tempfile.TemporaryDirectory() as tmp:
        split = synthetic_split(args.dataset, args.rows, Path(tmp) / "splits")
        started = time.perf_counter()
        import tensorflow_transform.beam  # noqa: F401  (imports are not the stage's fixed cost)

        imports = time.perf_counter() - started
        for attempt in range(args.repeat):
            result = measure(args.dataset, split, Path(tmp) / f"out{attempt}")
            report = {
                "run": attempt + 1,
                "rows": args.rows,
                "tft_graph_mode": "tf2 tracing" if args.tf2_tracing else "tf1 graph",
                "load_average_1m": round(os.getloadavg()[0], 2),
                "import_s": round(imports, 2),
                **result,
            }
            print(json.dumps(report))


if __name__ == "__main__":
    main()
