"""Train the wide-and-deep model on the transformed TFRecords and evaluate it against baselines.

The input pipeline keeps the trainer busy (``bench/input_pipeline.py`` measures it against the
model's consumption). A split whose shards are small (:data:`IN_MEMORY_LIMIT_BYTES`) is parsed
once into whole-split tensors (:class:`ParsedSplit`); its batches are then a shuffled index batch
and one ``tf.gather`` per feature, so no record is decompressed or parsed twice, and the
models trained in one process (and every validation pass) share those tensors. A larger split
streams two shards at a time (:func:`make_dataset`): each read whole and parsed the same way,
their rows shuffled together and cut into batches in one step, the next window prepared while
the model trains on the current one.

The label kind decides the head, the loss and the metrics (``pipeline.metrics``: AUC, accuracy,
precision, recall, log loss for binary labels; accuracy, macro-F1, log loss for multi-class;
RMSE, MAE, R^2 for regression). Metrics are reported on eval and test for the model and for
baselines beside it (the baseline models train apart, see :class:`BaselineRequest`):

* ``<majority|mean>_baseline_<split>``: always predict the training class shares (binary and
  multi-class: the majority class) or the training mean (regression);
* ``wide_baseline_<split>``: the wide part alone (a linear model over the same one-hot features),
  built by the same code, trained on the same batches for the same steps with the same early
  stopping;
* ``no_derived_baseline_<split>`` (datasets with window features or joins): the same
  wide-and-deep model over the features that read no derived column, trained the same way, so
  the run shows what the window and join features add.

``--train-steps N`` trains exactly N steps unless early stopping ends training sooner.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras

from pipeline import canonical_saved_model, console, storage
from pipeline import metrics as evaluation
from pipeline.background import StartedProcess, die_with_parent, scratch_dir
from pipeline.cli import add_dataset_argument, dataset_from_args, exit_on_usage_error
from pipeline.definition import DatasetDefinition, Head, LabelKind
from pipeline.model import (
    WIDE_AND_DEEP,
    WIDE_ONLY,
    ModelConfig,
    ModelInput,
    build_model,
    initial_output_bias,
    model_inputs,
)
from pipeline.tfrecord_io import read_gzip_records

AUTOTUNE = tf.data.AUTOTUNE
EVAL_BATCH_SIZE = 1024
# Splits whose gzipped shards add up to at most this are parsed once and kept in memory: about
# 1.5M transformed rows of the default dataset (its 800k train rows of 1M synthetic ones: 67 MB
# of shards). Three models streaming a split decompress and parse it on every read, and the
# label summary a whole extra pass; parsed once, they share one read.
IN_MEMORY_LIMIT_BYTES = 128 * 2**20
PARSE_BATCH_SIZE = 8192
# Shards a streamed split holds in memory at once (see make_dataset): a window's rows are
# shuffled together, so rows of different shards share batches.
STREAM_WINDOW_SHARDS = 2
EVALUATED_SPLITS = ("eval", "test")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    train_steps: int = 2000
    steps_per_epoch: int = 200
    batch_size: int = 256
    early_stopping_patience: int = 3
    seed: int = 42
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    # Train the wide part alone as a baseline (doubles training time).
    wide_baseline: bool = True
    # TensorFlow's deterministic kernels: the same inputs give the same weights, bit for bit.
    deterministic: bool = True
    # With derived columns: the same model without the features that read them.
    no_derived_baseline: bool = True
    # Train the baselines in a child process beside the model (on two cores it then costs little).
    baselines_beside: bool = True


@dataclasses.dataclass
class TrainResult:
    model_dir: str
    metrics: dict[str, dict[str, float]]
    seconds: float
    steps: int
    config: TrainConfig = dataclasses.field(default_factory=TrainConfig)

    def to_manifest(self) -> dict:
        return {
            "model_dir": str(self.model_dir),
            "metrics": self.metrics,
            "steps": self.steps,
            "seconds": round(self.seconds, 3),
            "config": dataclasses.asdict(self.config),
        }


def make_dataset(
    file_pattern: str,
    tft_output: tft.TFTransformOutput,
    label: str,
    batch_size: int,
    shuffle: bool,
    repeat: bool,
    seed: int = 42,
) -> tf.data.Dataset:
    """(features, label) batches of a split too large for memory, a window of shards at a time.

    Shards hold at most :data:`pipeline.tfrecord_io.SHARD_ROWS` rows. ``STREAM_WINDOW_SHARDS``
    of them at a time are read whole and parsed as :func:`parse_split` does, in a Python
    generator that yields the window's rows cut into whole batches (``[batches, batch_size,
    ...]`` per feature); tf.data slices the batches off in C++, so no record pays a per-element
    op and the training loop shares the GIL only once per window. Shuffling permutes the shards'
    order every epoch and the rows within each window (seeded: the same batches every run); rows
    left over from a window fill the next one's first batch, and with ``repeat`` the epoch's
    last rows are topped up from the next epoch, as in :meth:`ParsedSplit.batches`.
    """
    spec = tft_output.transformed_feature_spec()
    paths = storage.glob(file_pattern)  # sorted
    specs = {n: tf.TensorSpec([None, None, *f.shape], f.dtype) for n, f in spec.items()}
    label_spec = specs.pop(label)

    def windows(rng: np.random.Generator) -> Iterator[dict[str, np.ndarray]]:
        order = list(rng.permutation(len(paths)) if shuffle else range(len(paths)))
        for start in range(0, len(order), STREAM_WINDOW_SHARDS):
            shards = [
                _parse_records(read_gzip_records(paths[i]), spec)
                for i in order[start : start + STREAM_WINDOW_SHARDS]
            ]
            yield {n: np.concatenate([shard[n].numpy() for shard in shards]) for n in spec}

    def as_batches(rows: dict[str, np.ndarray], count: int, size: int) -> tuple[dict, np.ndarray]:
        cut = {n: v[: count * size].reshape(count, size, *v.shape[1:]) for n, v in rows.items()}
        return cut, cut.pop(label)

    def generate() -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
        rng = np.random.default_rng(seed)
        carried: dict[str, np.ndarray] | None = None
        while True:
            rows_this_epoch = 0
            for window in windows(rng):
                rows_this_epoch += len(window[label])
                if carried is not None:
                    window = {n: np.concatenate([carried[n], window[n]]) for n in spec}
                if shuffle:
                    permutation = rng.permutation(len(window[label]))
                    window = {n: v[permutation] for n, v in window.items()}
                count = len(window[label]) // batch_size
                if count:
                    yield as_batches(window, count, batch_size)
                carried = {n: v[count * batch_size :] for n, v in window.items()}
            if not repeat or rows_this_epoch == 0:
                break
        if carried is not None and len(carried[label]):
            yield as_batches(carried, 1, len(carried[label]))

    windowed = tf.data.Dataset.from_generator(generate, output_signature=(specs, label_spec))
    batches = windowed.flat_map(lambda *cut: tf.data.Dataset.from_tensor_slices(cut))
    return batches.prefetch(AUTOTUNE)


def _parse_records(records: list[bytes], spec: dict) -> dict[str, tf.Tensor]:
    """Serialized examples parsed ``PARSE_BATCH_SIZE`` at a time: one tensor per feature."""
    parts: dict[str, list[tf.Tensor]] = {name: [] for name in spec}
    for start in range(0, len(records), PARSE_BATCH_SIZE):
        chunk = tf.constant(records[start : start + PARSE_BATCH_SIZE])
        for name, values in tf.io.parse_example(chunk, spec).items():
            parts[name].append(values)
    return {
        name: tf.concat(values, axis=0)
        if values
        else tf.zeros([0, *spec[name].shape], spec[name].dtype)
        for name, values in parts.items()
    }


@dataclasses.dataclass(frozen=True)
class ParsedSplit:
    """A whole split parsed once: one tensor per transformed feature and one of labels.

    :meth:`batches` serves training and evaluation batches from it, so every model trained on the
    split (and every validation pass) reads the same tensors instead of parsing the records again.
    """

    features: dict[str, tf.Tensor]
    labels: tf.Tensor

    @property
    def rows(self) -> int:
        return int(self.labels.shape[0])

    def batches(
        self,
        batch_size: int,
        shuffle: bool,
        repeat: bool,
        seed: int = 42,
        names: set[str] | None = None,
    ) -> tf.data.Dataset:
        """(features, label) batches; ``names`` keeps only those features.

        Shuffling permutes the whole split every epoch (seeded, so the same batches every run);
        with ``repeat`` an epoch's last batch is topped up from the next epoch, as in the
        streaming path. Each batch costs one gather per feature.
        """
        features = {k: v for k, v in self.features.items() if names is None or k in names}
        labels = self.labels
        indices = tf.data.Dataset.range(self.rows)
        if shuffle:
            indices = indices.shuffle(self.rows, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            indices = indices.repeat()

        def gather(batch):
            return {k: tf.gather(v, batch) for k, v in features.items()}, tf.gather(labels, batch)

        batched = indices.batch(batch_size, drop_remainder=False)
        return batched.map(gather, num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(
            AUTOTUNE
        )


def parse_split(file_pattern: str, tft_output: tft.TFTransformOutput, label: str) -> ParsedSplit:
    """Read and parse every record of a split once, shard after shard in file order.

    Each shard is read whole (:func:`pipeline.tfrecord_io.read_gzip_records`) and parsed
    ``PARSE_BATCH_SIZE`` records per ``parse_example``; the row order is the files' order, so it
    does not depend on how many shards a reader would interleave (the number of cores).
    """
    spec = tft_output.transformed_feature_spec()
    paths = storage.glob(file_pattern)
    shards = [_parse_records(read_gzip_records(path), spec) for path in paths]
    shards = shards or [_parse_records([], spec)]
    features = {n: tf.concat([shard[n] for shard in shards], axis=0) for n in spec}
    return ParsedSplit(features, features.pop(label))


def shard_bytes(file_pattern: str) -> int:
    """Total size of a split's (gzipped) shards."""
    return sum(tf.io.gfile.stat(path).length for path in tf.io.gfile.glob(file_pattern))


def load_split(
    file_pattern: str,
    tft_output: tft.TFTransformOutput,
    label: str,
    limit_bytes: int = IN_MEMORY_LIMIT_BYTES,
) -> ParsedSplit | None:
    """The split parsed into memory if its shards are at most ``limit_bytes``, else None."""
    if shard_bytes(file_pattern) > limit_bytes:
        return None
    return parse_split(file_pattern, tft_output, label)


class StepBudget(tf_keras.callbacks.Callback):
    """Stops training after exactly ``steps`` batches, wherever that falls in an epoch.

    It reads no logs, and says so (``_supports_tf_logs``): otherwise Keras, for a callback with
    a batch hook, copies every batch's logs (loss and metric tensors) to NumPy.
    """

    def __init__(self, steps: int):
        super().__init__()
        self._supports_tf_logs = True
        self.steps = steps
        self.done = 0

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        if self.done >= self.steps:
            self.model.stop_training = True


def _fit(
    model: tf_keras.Model,
    head: Head,
    train_ds: tf.data.Dataset,
    eval_ds: tf.data.Dataset,
    config: TrainConfig,
    log_dir: str,
) -> int:
    """Fit with early stopping on the head's metric and TensorBoard logs; the steps trained."""
    steps_per_epoch = max(1, min(config.steps_per_epoch, config.train_steps))
    budget = StepBudget(config.train_steps)
    model.fit(
        train_ds,
        validation_data=eval_ds,
        epochs=math.ceil(config.train_steps / steps_per_epoch),
        steps_per_epoch=steps_per_epoch,
        callbacks=[
            budget,
            tf_keras.callbacks.EarlyStopping(
                monitor=head.stopping_metric,
                mode=head.stopping_mode,
                patience=config.early_stopping_patience,
                restore_best_weights=True,
            ),
            tf_keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False),
            *console.training_callbacks(config.train_steps),  # progress lines under pipeline.run
        ],
        verbose=0,
    )
    return budget.done


def _batch_predictor(model: tf_keras.Model, features_spec: dict[str, tf.TensorSpec]) -> Callable:
    """``model(features, training=False)`` traced once for batches of any size.

    Keras layers called op by op in eager mode took 5.2 s for 100k rows, a traced call 1.3 s;
    traced per batch shape, every split's last batch and every split traced it again (about
    0.3 s each on the default dataset's model). ``features_spec`` has no fixed batch size.
    """
    return tf.function(
        lambda features: model(features, training=False), input_signature=[features_spec]
    )


def _labels_and_predictions(
    predict: Callable, dataset: tf.data.Dataset
) -> tuple[np.ndarray, np.ndarray]:
    labels, predictions = [], []
    for features, label in dataset:
        labels.append(label.numpy())
        predictions.append(predict(features).numpy())
    if not labels:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(labels), np.concatenate(predictions)


def label_scale(dataset: DatasetDefinition, values: np.ndarray) -> np.ndarray:
    """Values of the transformed label back on the label's own scale (undo ``log1p``)."""
    label = dataset.label
    if label.kind is LabelKind.REGRESSION and getattr(label, "log1p", False):
        return np.expm1(values)
    return values


def evaluate_model(
    dataset: DatasetDefinition, model: tf_keras.Model, split_datasets: dict[str, tf.data.Dataset]
) -> dict[str, dict[str, float]]:
    """The head's metrics of ``model`` on every split (batches of the same features)."""
    results, predict = {}, None
    for split, ds in split_datasets.items():
        predict = predict or _batch_predictor(model, ds.element_spec[0])
        labels, predictions = _labels_and_predictions(predict, ds)
        results[split] = evaluation.evaluate(
            dataset.label_kind, label_scale(dataset, labels), label_scale(dataset, predictions)
        )
    return results


def _train_model(
    dataset: DatasetDefinition,
    inputs: list[ModelInput],
    parts,
    train_ds: tf.data.Dataset,
    split_datasets: dict[str, tf.data.Dataset],
    config: TrainConfig,
    log_dir: str,
    output_bias: list[float],
) -> tuple[tf_keras.Model, int, dict]:
    """Build (same seed for every model), fit and evaluate one model on the given batches.

    Seeded and with TensorFlow's deterministic kernels, so the same inputs train the same
    weights (and give the same metrics) on every run.
    """
    tf_keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    head = dataset.label.head
    model = build_model(inputs, head, config.model, parts, output_bias)
    steps = _fit(model, head, train_ds, split_datasets["eval"], config, log_dir)
    return model, steps, evaluate_model(dataset, model, split_datasets)


def split_labels(file_pattern: str, tft_output: tft.TFTransformOutput, label: str) -> np.ndarray:
    """Every label of a split (parses the label only), shard after shard as :func:`parse_split`."""
    label_spec = {label: tft_output.transformed_feature_spec()[label]}
    paths = storage.glob(file_pattern)
    labels = [_parse_records(read_gzip_records(path), label_spec)[label] for path in paths]
    return tf.concat(labels, axis=0).numpy() if labels else np.zeros(0)


class SplitBatches:
    """Batches of every split, from memory where the split is small, streamed otherwise."""

    def __init__(
        self,
        tft_output: tft.TFTransformOutput,
        label: str,
        example_patterns: dict[str, str],
        config: TrainConfig,
    ):
        self.tft_output, self.label, self.config = tft_output, label, config
        self.patterns = example_patterns
        self.parsed = {
            split: load_split(pattern, tft_output, label)
            for split, pattern in example_patterns.items()
        }

    def batches(self, split: str, names: set[str] | None = None) -> tf.data.Dataset:
        """Shuffled, repeated training batches for ``train``; one ordered pass otherwise.

        tf.data takes a shuffle's seeds from the global seed as it stands when the dataset is
        built, and every model sets it (to the same value) before it trains: a dataset built
        after one model was trained got other batches than one built before. It is therefore
        built with no global seed set, so every model, in this process or a child, and
        whatever trained before it, sees the same batches.
        """
        training = split == "train"
        if training:
            tf.random.set_seed(None)
        size = self.config.batch_size if training else EVAL_BATCH_SIZE
        parsed = self.parsed[split]
        if parsed is not None:
            return parsed.batches(size, training, training, self.config.seed, names)
        streamed = make_dataset(
            self.patterns[split], self.tft_output, self.label, size, training, training,
            self.config.seed,
        )  # fmt: skip
        return streamed if names is None else _select(streamed, names)

    def labels(self, split: str) -> np.ndarray:
        parsed = self.parsed[split]
        if parsed is not None:
            return parsed.labels.numpy()
        return split_labels(self.patterns[split], self.tft_output, self.label)


def _baselines(
    dataset: DatasetDefinition, splits: SplitBatches, evaluated: list[str]
) -> tuple[dict, dict]:
    """The training label summary and the trivial baseline's metrics on ``evaluated``."""
    kind = dataset.label_kind
    train_labels = splits.labels("train")
    summary = evaluation.label_summary(kind, train_labels, dataset.label.num_classes)
    scaled = evaluation.label_summary(
        kind, label_scale(dataset, train_labels), dataset.label.num_classes
    )
    results = {}
    for split in evaluated:
        labels = label_scale(dataset, splits.labels(split))
        predictions = evaluation.baseline_predictions(kind, scaled, len(labels))
        results[split] = evaluation.evaluate(kind, labels, predictions)
    return summary, results


def train_and_evaluate(
    dataset: DatasetDefinition,
    transform_dir: str | Path,
    example_patterns: dict[str, str],
    model_dir: str | Path,
    config: TrainConfig = TrainConfig(),
) -> TrainResult:
    """Fit the model on train with early stopping on eval; its metrics on eval/test beside the
    trivial baseline's.

    ``metrics`` keys: ``eval``/``test`` (the model), ``<majority|mean>_baseline_<split>`` and
    ``train_labels`` (what the trivial baseline learned: class shares or the mean, on the
    transformed label's scale). The baseline models train apart (:class:`BaselineRequest`), so
    that they can run beside this model and the stages after it.
    """
    started = time.perf_counter()
    tft_output = tft.TFTransformOutput(str(transform_dir))
    label = dataset.label.name
    head = dataset.label.head
    evaluated = [split for split in EVALUATED_SPLITS if split in example_patterns]
    if "eval" not in evaluated:
        raise ValueError("training needs an eval split for early stopping")
    used = {split: example_patterns[split] for split in ("train", *evaluated)}
    with storage.staged_directory(model_dir) as staging:
        splits = SplitBatches(tft_output, label, used, config)
        summary, baseline = _baselines(dataset, splits, evaluated)
        model, steps, metrics = _train_model(
            dataset, model_inputs(dataset, tft_output), WIDE_AND_DEEP,
            splits.batches("train"), {s: splits.batches(s) for s in evaluated}, config,
            storage.join(staging, "logs"), initial_output_bias(head, summary),
        )  # fmt: skip
        for split, values in baseline.items():
            metrics[f"{head.baseline}_baseline_{split}"] = values
        metrics["train_labels"] = summary
        # Without traced layer functions: saved in 0.3 s instead of 2.6 s, and the export stage
        # rebuilds the model from its config (custom layers registered) in 0.35 s, not 1.0 s.
        model.save(storage.join(staging, "keras"), save_format="tf", save_traces=False)
        canonical_saved_model.canonicalize(storage.join(staging, "keras"))
    return TrainResult(str(model_dir), metrics, time.perf_counter() - started, steps, config)


def baseline_kinds(dataset: DatasetDefinition, config: TrainConfig) -> tuple[str, ...]:
    """The baseline models to train: ``wide`` and, with derived columns, ``no_derived``."""
    kinds = ("wide",) if config.wide_baseline else ()
    derived = set(dataset.derived_column_names)
    if config.no_derived_baseline and any(derived.intersection(f.inputs) for f in dataset.features):
        kinds += ("no_derived",)
    return kinds


@dataclasses.dataclass
class TrainedBaselines:
    """The baseline models' metrics (``wide_baseline_<split>``, ...) and steps trained."""

    metrics: dict[str, dict]
    wide_steps: int | None = None
    no_derived_steps: int | None = None

    def to_manifest(self) -> dict:
        return dataclasses.asdict(self)


def train_baselines(
    dataset: DatasetDefinition,
    tft_output: tft.TFTransformOutput,
    splits: SplitBatches,
    config: TrainConfig,
    log_dir: str,
    kinds: tuple[str, ...],
    bias: list[float],
) -> TrainedBaselines:
    """Train the baseline models named in ``kinds`` (see :func:`baseline_kinds`), starting
    from the model's initial output ``bias``.

    Each is seeded like the model and trained on a fresh pass over the same batches, wherever
    it runs, so its weights and metrics do not depend on running beside the model or after it.
    """
    evaluated = [split for split in EVALUATED_SPLITS if split in splits.patterns]
    inputs = model_inputs(dataset, tft_output)
    trained = TrainedBaselines({})
    if "wide" in kinds:
        _, trained.wide_steps, wide_metrics = _train_model(
            dataset, inputs, WIDE_ONLY, splits.batches("train"),
            {s: splits.batches(s) for s in evaluated}, config,
            storage.join(log_dir, "wide"), bias,
        )  # fmt: skip
        for split, values in wide_metrics.items():
            trained.metrics[f"wide_baseline_{split}"] = values
    if "no_derived" in kinds:
        names = {i.name for i in _without_derived(dataset, inputs)}
        _, trained.no_derived_steps, no_derived_metrics = _train_model(
            dataset, [i for i in inputs if i.name in names], WIDE_AND_DEEP,
            splits.batches("train", names), {s: splits.batches(s, names) for s in evaluated},
            config, storage.join(log_dir, "no_derived"), bias,
        )  # fmt: skip
        for split, values in no_derived_metrics.items():
            trained.metrics[f"no_derived_baseline_{split}"] = values
    return trained


@dataclasses.dataclass
class BaselineRequest:
    """The baseline models of a run (:func:`baseline_kinds`), trained here or in a child process.

    Nothing but the reports waits for them, so ``pipeline.run`` trains them in a child process
    started right after the transform: on two cores it runs beside the model's training, then
    beside export and parity. ``python -m pipeline.train --baselines-request FILE`` reads this
    as JSON, trains (:meth:`run`, TensorBoard logs into a directory of its own, outside the run
    directory) and prints a :class:`TrainedBaselines` as its last stdout line; :meth:`collect`
    moves the logs where the parent wants them. A child dies with its parent.
    """

    dataset: str
    transform_dir: str
    example_patterns: dict[str, str]
    config: TrainConfig
    kinds: tuple[str, ...]

    @classmethod
    def of(
        cls,
        dataset: DatasetDefinition,
        transform_dir: str | Path,
        example_patterns: dict[str, str],
        config: TrainConfig,
    ) -> BaselineRequest:
        used = {s: p for s, p in example_patterns.items() if s in ("train", *EVALUATED_SPLITS)}
        return cls(dataset.name, str(transform_dir), used, config, baseline_kinds(dataset, config))

    def can_run_beside(self, dataset: DatasetDefinition) -> bool:
        """Whether a child may train them: there are some, the config allows it and a child
        process finds the same definition by its name (not so for a definition built in code)."""
        from pipeline.datasets import is_registered

        return bool(self.kinds) and self.config.baselines_beside and is_registered(dataset)

    def run(self, dataset: DatasetDefinition, log_dir: str) -> TrainedBaselines:
        """Train them in this process, starting from the model's initial output bias."""
        if not self.kinds:
            return TrainedBaselines({})
        tft_output = tft.TFTransformOutput(self.transform_dir)
        splits = SplitBatches(tft_output, dataset.label.name, self.example_patterns, self.config)
        evaluated = [split for split in EVALUATED_SPLITS if split in splits.patterns]
        summary, _ = _baselines(dataset, splits, evaluated)
        bias = initial_output_bias(dataset.label.head, summary)
        return train_baselines(dataset, tft_output, splits, self.config, log_dir, self.kinds, bias)

    def start(self) -> StartedProcess:
        log_dir = scratch_dir("baselines")
        request = dataclasses.asdict(self) | {"log_dir": log_dir, "parent_pid": os.getpid()}
        path = Path(log_dir) / "request.json"
        path.write_text(json.dumps(request))
        return StartedProcess.start(
            [sys.executable, "-m", "pipeline.train", "--baselines-request", str(path)],
            cleanup=lambda: shutil.rmtree(log_dir, ignore_errors=True),  # killed: nothing kept
        )

    def collect(self, started: StartedProcess, log_dir: str) -> TrainedBaselines:
        returncode, output, errors = started.finish()
        if returncode != 0:
            if started.cleanup is not None:
                started.cleanup()  # the request and whatever logs the child wrote
            raise RuntimeError(
                f"training the baselines failed (exit {returncode}):\n{errors[-4000:]}"
            )
        answer = json.loads(output.strip().splitlines()[-1])
        child_logs = Path(answer.pop("log_dir"))
        for name in self.kinds:
            if (child_logs / name).is_dir():
                storage.copytree(str(child_logs / name), storage.join(log_dir, name))
        shutil.rmtree(child_logs, ignore_errors=True)
        return TrainedBaselines(**answer)

    @staticmethod
    def serve(path: str) -> None:
        """The child's side: train what the request at ``path`` asks, print the result."""
        from pipeline.datasets import get_dataset

        request = json.loads(Path(path).read_text())
        die_with_parent(request.pop("parent_pid"))
        log_dir = request.pop("log_dir")
        config = request.pop("config")
        config = TrainConfig(**{**config, "model": ModelConfig(**{
            **config["model"], "hidden_units": tuple(config["model"]["hidden_units"])
        })})  # fmt: skip
        baselines = BaselineRequest(
            **{**request, "config": config, "kinds": tuple(request["kinds"])}
        )
        trained = baselines.run(get_dataset(baselines.dataset), log_dir)
        print(json.dumps(dataclasses.asdict(trained) | {"log_dir": log_dir}))


def _without_derived(dataset: DatasetDefinition, inputs: list[ModelInput]) -> list[ModelInput]:
    """The inputs whose features read no derived column (window features, joins)."""
    derived = set(dataset.derived_column_names)
    return [i for i in inputs if not derived.intersection(i.feature.inputs)]


def _select(batches: tf.data.Dataset, names: set[str]) -> tf.data.Dataset:
    """Batches with only the ``names`` features (the label kept)."""
    return batches.map(
        lambda features, label: ({k: v for k, v in features.items() if k in names}, label),
        num_parallel_calls=AUTOTUNE,
    )


def load_trained_model(model_dir: str | Path) -> tf_keras.Model:
    return tf_keras.models.load_model(storage.join(model_dir, "keras"))


def _units(text: str) -> tuple[int, ...]:
    """``"64,32"`` -> ``(64, 32)``; ``""`` -> no hidden layer."""
    try:
        units = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if any(u <= 0 for u in units):
        raise argparse.ArgumentTypeError(f"hidden layer sizes must be positive, got {text!r}")
    return units


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        train_steps=args.train_steps,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        early_stopping_patience=args.early_stopping_patience,
        seed=args.seed,
        wide_baseline=args.wide_baseline,
        no_derived_baseline=args.no_derived_baseline,
        model=ModelConfig(
            hidden_units=args.hidden_units,
            max_embedding_dim=args.max_embedding_dim,
            learning_rate=args.learning_rate,
            dropout=args.dropout,
        ),
    )


def add_train_arguments(parser: argparse.ArgumentParser, train_steps: int | None = None) -> None:
    """The training hyperparameters as flags, defaulting to :class:`TrainConfig`'s values."""
    train, model = TrainConfig(), ModelConfig()
    parser.add_argument("--train-steps", type=_positive, default=train_steps or train.train_steps)
    parser.add_argument("--steps-per-epoch", type=_positive, default=train.steps_per_epoch)
    parser.add_argument("--batch-size", type=_positive, default=train.batch_size)
    parser.add_argument(
        "--early-stopping-patience", type=int, default=train.early_stopping_patience
    )
    parser.add_argument("--seed", type=int, default=train.seed)
    parser.add_argument(
        "--hidden-units",
        type=_units,
        default=model.hidden_units,
        help="deep part's hidden layer sizes, e.g. 128,64,32 ('' for none; default %(default)s)",
    )
    parser.add_argument(
        "--max-embedding-dim", type=int, default=model.max_embedding_dim, help="embedding cap"
    )
    parser.add_argument("--learning-rate", type=float, default=model.learning_rate)
    parser.add_argument("--dropout", type=float, default=model.dropout)
    parser.add_argument(
        "--no-wide-baseline",
        dest="wide_baseline",
        action="store_false",
        help="skip training the wide-only baseline",
    )
    parser.add_argument(
        "--skip-no-derived-baseline",
        dest="no_derived_baseline",
        action="store_false",
        help="skip training the baseline without the window and join features",
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--baselines-request"]:  # a child of train_and_evaluate (BaselineRequest)
        BaselineRequest.serve(argv[1])
        return
    parser = argparse.ArgumentParser(description="Train and evaluate the wide-and-deep model.")
    add_dataset_argument(parser)
    parser.add_argument("--transform-dir", required=True, help="a path or gs:// URI")
    parser.add_argument("--model-dir", required=True, help="a path or gs:// URI")
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    with exit_on_usage_error():
        dataset = dataset_from_args(args)
    patterns = {
        split: storage.join(args.transform_dir, "examples", f"{split}-*.tfrecord.gz")
        for split in ("train", *EVALUATED_SPLITS)
    }
    examples = {split: pattern for split, pattern in patterns.items() if storage.glob(pattern)}
    config = config_from_args(args)
    baselines = BaselineRequest.of(dataset, args.transform_dir, examples, config)
    beside = baselines.start() if baselines.can_run_beside(dataset) else None
    try:
        result = train_and_evaluate(dataset, args.transform_dir, examples, args.model_dir, config)
    except BaseException:
        if beside is not None:
            beside.kill()
        raise
    logs = storage.join(args.model_dir, "logs")
    trained = baselines.collect(beside, logs) if beside else baselines.run(dataset, logs)
    manifest = result.to_manifest()
    manifest["metrics"].update(trained.metrics)
    print(json.dumps(manifest | {"baselines": trained.to_manifest()}, indent=2))


if __name__ == "__main__":
    main()
