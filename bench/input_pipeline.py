"""Does training wait on input? The tf.data pipeline's examples/second vs the model's consumption.

    .venv/bin/python bench/input_pipeline.py --transform-dir runs/LATEST/transform \\
        [--seconds 10] [--rounds 3] [--batch-size 256] [--hidden-units 64,32]

On the same transformed TFRecords (the transform stage's ``examples/train-*``), these rates, each
measured ``--rounds`` times for ``--seconds`` after a warm-up (medians reported, rounds
interleaved):

* ``input_streamed``: iterate :func:`pipeline.train.make_dataset` (windows of whole shards
  parsed, shuffled and cut into batches; prefetch) without a model: what the streaming pipeline
  can deliver;
* ``input_in_memory``: iterate :meth:`pipeline.train.ParsedSplit.batches` (the split parsed once,
  a shuffled index batch and one gather per feature), what ``pipeline.train`` uses for splits up
  to ``IN_MEMORY_LIMIT_BYTES``; ``parse_once_s`` is the one-off parse it costs;
* ``model_alone``: train the wide-and-deep model on a few parsed batches cached in memory and
  repeated: what the model consumes when input costs nothing (training steps/s * batch size);
* ``model_with_streamed`` / ``model_with_in_memory``: train on each pipeline.

``input_vs_model`` = input / model_alone for each pipeline: above 1 the pipeline delivers faster
than the model consumes. ``pipeline_overhead`` = 1 - model_with_X / model_alone: the share of
training throughput lost to input (parsing competes with training for the same cores).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

CACHED_BATCHES = 32


def input_only(iterator, seconds: float) -> float:
    """Examples/second of pulling (features, label) batches from the pipeline alone."""
    examples = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        _, labels = next(iterator)
        examples += int(labels.shape[0])
    return examples / (time.perf_counter() - started)


def model_consumption(model, dataset, batch_size: int, seconds: float) -> float:
    """Examples/second (training steps/second * batch size) of ``model.fit``, time-bounded."""
    import tf_keras

    class StopAfter(tf_keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.steps, self.started, self.elapsed = 0, None, None

        def on_train_batch_end(self, batch, logs=None) -> None:
            if self.started is None:  # the first step may include tracing: start after it
                self.started = time.perf_counter()
                return
            self.steps += 1
            elapsed = time.perf_counter() - self.started
            if elapsed >= seconds:
                self.elapsed = elapsed
                self.model.stop_training = True

    timer = StopAfter()
    model.fit(dataset, epochs=1, steps_per_epoch=10**9, callbacks=[timer], verbose=0)
    return timer.steps * batch_size / timer.elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", help="dataset of the transform output (default: the default)")
    parser.add_argument("--transform-dir", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of one measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each rate")
    parser.add_argument("--warmup-steps", type=int, default=20)
    from pipeline.train import add_train_arguments, config_from_args

    add_train_arguments(parser)
    args = parser.parse_args(argv)
    config = config_from_args(args)

    import tensorflow as tf
    import tensorflow_transform as tft
    import tf_keras

    from pipeline.datasets import get_dataset
    from pipeline.model import build_model, model_inputs
    from pipeline.train import make_dataset, parse_split

    dataset = get_dataset(args.dataset)
    tft_output = tft.TFTransformOutput(str(args.transform_dir))
    pattern = str(args.transform_dir / "examples" / "train-*.tfrecord.gz")

    def streamed():
        return make_dataset(
            pattern, tft_output, dataset.label.name, config.batch_size, True, True, config.seed
        )

    started = time.perf_counter()
    parsed = parse_split(pattern, tft_output, dataset.label.name)
    parse_once = time.perf_counter() - started

    def in_memory():
        return parsed.batches(config.batch_size, True, True, config.seed)

    pipelines = {"streamed": streamed, "in_memory": in_memory}

    def new_model():
        tf_keras.utils.set_random_seed(config.seed)
        return build_model(model_inputs(dataset, tft_output), dataset.label.head, config.model)

    # Each measurement runs once per round, rounds interleaved, so load from other processes
    # on the machine spreads over all three; medians are reported. An input is measured on a
    # fresh iterator, released right after: a live one goes on prefetching (the streamed one
    # parses its next window) while the other is measured.
    inputs = {f"input_{name}": make for name, make in pipelines.items()}
    cached = streamed().take(CACHED_BATCHES).cache().repeat()
    models = {
        "model_alone": (new_model(), lambda: cached),
        **{f"model_with_{name}": (new_model(), make) for name, make in pipelines.items()},
    }
    for model, data in models.values():
        model.fit(data(), epochs=1, steps_per_epoch=args.warmup_steps, verbose=0)
    samples: dict[str, list[float]] = {name: [] for name in [*inputs, *models]}
    for _ in range(args.rounds):
        for name, make in inputs.items():
            iterator = iter(make())
            for _ in range(args.warmup_steps):
                next(iterator)
            samples[name].append(input_only(iterator, args.seconds))
            del iterator
            gc.collect()
        for name, (model, data) in models.items():
            samples[name].append(model_consumption(model, data(), config.batch_size, args.seconds))
    rates = {name: statistics.median(values) for name, values in samples.items()}
    demand = rates["model_alone"]
    report = {
        "transform_dir": str(args.transform_dir),
        "train_files": len(tf.io.gfile.glob(pattern)),
        "batch_size": config.batch_size,
        "hidden_units": list(config.model.hidden_units),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "seconds_per_measurement": args.seconds,
        "examples_per_second": {name: round(rate) for name, rate in rates.items()},
        "training_steps_per_second": {
            name: round(rates[name] / config.batch_size, 1) for name in models
        },
        "samples": {name: [round(v) for v in values] for name, values in samples.items()},
        "parse_once_s": round(parse_once, 2),
        "input_vs_model": {name: round(rates[f"input_{name}"] / demand, 2) for name in pipelines},
        "pipeline_overhead": {
            name: round(1.0 - rates[f"model_with_{name}"] / demand, 3) for name in pipelines
        },
        "in_memory_vs_streamed": round(rates["input_in_memory"] / rates["input_streamed"], 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
