"""Train the wide-and-deep model on the transformed TFRecords and evaluate it against baselines.

The input pipeline keeps the trainer busy: shards are read in parallel (interleave), records are
shuffled, batched *before* parsing so one vectorized ``parse_example`` handles a whole batch, and
the next batches are prefetched while the model trains on the current one
(``bench/input_pipeline.py`` measures the pipeline against the model's consumption).

Metrics (AUC, accuracy, precision, recall, log loss) are reported on eval and test for the model
and for two baselines beside it:

* ``majority_baseline_<split>``: always predict the training split's majority class, with the
  training positive rate as the probability (AUC 0.5; its log loss is that of the base rate);
* ``wide_baseline_<split>``: the wide part alone (a linear model over the same one-hot features),
  built by the same code, trained on the same batches for the same steps with the same early
  stopping.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras

from pipeline import console, storage
from pipeline.dataset import DatasetDefinition
from pipeline.datasets import get_dataset
from pipeline.model import (
    WIDE_AND_DEEP,
    WIDE_ONLY,
    ModelConfig,
    ModelInput,
    build_model,
    model_inputs,
)

AUTOTUNE = tf.data.AUTOTUNE
EVAL_BATCH_SIZE = 1024
EVALUATED_SPLITS = ("eval", "test")
# Log loss clips probabilities like Keras' binary cross-entropy does.
_EPSILON = 1e-7


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


@dataclasses.dataclass
class TrainResult:
    model_dir: str
    metrics: dict[str, dict[str, float]]
    seconds: float
    steps: int
    config: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    wide_baseline_steps: int | None = None

    def to_manifest(self) -> dict:
        manifest = {
            "model_dir": str(self.model_dir),
            "metrics": self.metrics,
            "steps": self.steps,
            "seconds": round(self.seconds, 3),
            "config": dataclasses.asdict(self.config),
        }
        if self.wide_baseline_steps is not None:
            manifest["wide_baseline_steps"] = self.wide_baseline_steps
        return manifest


def make_dataset(
    file_pattern: str,
    tft_output: tft.TFTransformOutput,
    label: str,
    batch_size: int,
    shuffle: bool,
    repeat: bool,
    seed: int = 42,
) -> tf.data.Dataset:
    """(features, label) batches from gzipped TFRecord shards of transformed examples."""
    feature_spec = tft_output.transformed_feature_spec()
    files = tf.data.Dataset.list_files(file_pattern, shuffle=shuffle, seed=seed)
    records = files.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type="GZIP"),
        cycle_length=AUTOTUNE,
        num_parallel_calls=AUTOTUNE,
        deterministic=not shuffle,
    )
    if shuffle:
        records = records.shuffle(buffer_size=max(10 * batch_size, 10_000), seed=seed)
    if repeat:
        records = records.repeat()
    batches = records.batch(batch_size, drop_remainder=False)

    def parse(serialized):
        features = tf.io.parse_example(serialized, feature_spec)
        return features, features.pop(label)

    parsed = batches.map(parse, num_parallel_calls=AUTOTUNE, deterministic=not shuffle)
    return parsed.prefetch(AUTOTUNE)


def majority_baseline(train_positive_rate: float, positive_rate: float) -> dict[str, float]:
    """Metrics on a split with ``positive_rate`` of always predicting the training majority.

    The probability predicted for every row is the training positive rate, so AUC is 0.5 and
    the log loss is the cross-entropy of the base rate; the class is the training majority.
    """
    predicts_positive = train_positive_rate >= 0.5
    accuracy = positive_rate if predicts_positive else 1.0 - positive_rate
    p = min(max(train_positive_rate, _EPSILON), 1.0 - _EPSILON)
    log_loss = -(positive_rate * math.log(p) + (1.0 - positive_rate) * math.log(1.0 - p))
    return {
        "auc": 0.5,
        "accuracy": round(accuracy, 6),
        # Keras reports 0 precision when nothing is predicted positive.
        "precision": round(positive_rate, 6) if predicts_positive else 0.0,
        "recall": (1.0 if positive_rate > 0 else 0.0) if predicts_positive else 0.0,
        "log_loss": round(log_loss, 6),
    }


def _fit(
    model: tf_keras.Model,
    train_ds: tf.data.Dataset,
    eval_ds: tf.data.Dataset,
    config: TrainConfig,
    log_dir: str,
) -> int:
    """Fit with early stopping on eval AUC and TensorBoard logs; returns the steps trained."""
    history = model.fit(
        train_ds,
        validation_data=eval_ds,
        epochs=max(1, config.train_steps // config.steps_per_epoch),
        steps_per_epoch=config.steps_per_epoch,
        callbacks=[
            tf_keras.callbacks.EarlyStopping(
                monitor="val_auc",
                mode="max",
                patience=config.early_stopping_patience,
                restore_best_weights=True,
            ),
            tf_keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False),
            *console.training_callbacks(),  # progress lines under pipeline.run
        ],
        verbose=0,
    )
    return len(history.history["loss"]) * config.steps_per_epoch


def _evaluate(model: tf_keras.Model, split_datasets: dict[str, tf.data.Dataset]) -> dict:
    return {
        split: {
            k: round(float(v), 6)
            for k, v in model.evaluate(ds, verbose=0, return_dict=True).items()
        }
        for split, ds in split_datasets.items()
    }


def _train_model(
    inputs: list[ModelInput],
    parts,
    train_ds: tf.data.Dataset,
    split_datasets: dict[str, tf.data.Dataset],
    config: TrainConfig,
    log_dir: str,
) -> tuple[tf_keras.Model, int, dict]:
    """Build (same seed for every model), fit and evaluate one model on the given batches."""
    tf_keras.utils.set_random_seed(config.seed)
    model = build_model(inputs, config.model, parts)
    steps = _fit(model, train_ds, split_datasets["eval"], config, log_dir)
    return model, steps, _evaluate(model, split_datasets)


def train_and_evaluate(
    dataset: DatasetDefinition,
    transform_dir: str | Path,
    example_patterns: dict[str, str],
    model_dir: str | Path,
    config: TrainConfig = TrainConfig(),
) -> TrainResult:
    """Fit on train with early stopping on eval; metrics on eval/test beside both baselines.

    ``metrics`` keys: ``eval``/``test`` (the model), ``majority_baseline_<split>``,
    ``wide_baseline_<split>`` (unless ``config.wide_baseline`` is off) and ``positive_rate``.
    """
    started = time.perf_counter()
    tft_output = tft.TFTransformOutput(str(transform_dir))
    label = dataset.label.name
    inputs = model_inputs(dataset, tft_output)
    train_ds = make_dataset(
        example_patterns["train"], tft_output, label, config.batch_size, True, True, config.seed
    )
    split_datasets = {
        split: make_dataset(
            example_patterns[split], tft_output, label, EVAL_BATCH_SIZE, False, False
        )
        for split in EVALUATED_SPLITS
        if split in example_patterns
    }
    if "eval" not in split_datasets:
        raise ValueError("training needs an eval split for early stopping")
    with storage.staged_directory(model_dir) as staging:
        model, steps, metrics = _train_model(
            inputs, WIDE_AND_DEEP, train_ds, split_datasets, config, storage.join(staging, "logs")
        )
        wide_steps = None
        if config.wide_baseline:
            _, wide_steps, wide_metrics = _train_model(
                inputs,
                WIDE_ONLY,
                train_ds,
                split_datasets,
                config,
                storage.join(staging, "logs", "wide"),
            )
            for split, values in wide_metrics.items():
                metrics[f"wide_baseline_{split}"] = values
        rates = {
            split: _positive_rate(example_patterns[split], tft_output, label)
            for split in ("train", *split_datasets)
        }
        for split in split_datasets:
            metrics[f"majority_baseline_{split}"] = majority_baseline(rates["train"], rates[split])
        metrics["positive_rate"] = {split: round(rate, 6) for split, rate in rates.items()}
        model.save(storage.join(staging, "keras"), save_format="tf")
    return TrainResult(
        str(model_dir), metrics, time.perf_counter() - started, steps, config, wide_steps
    )


def _positive_rate(file_pattern: str, tft_output: tft.TFTransformOutput, label: str) -> float:
    """Share of positive labels in a split (parses the label only)."""
    label_spec = {label: tft_output.transformed_feature_spec()[label]}
    records = tf.data.Dataset.list_files(file_pattern, shuffle=False).interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type="GZIP"),
        num_parallel_calls=AUTOTUNE,
    )
    labels = records.batch(4096).map(
        lambda s: tf.io.parse_example(s, label_spec)[label], num_parallel_calls=AUTOTUNE
    )
    positives = total = 0
    for batch in labels.prefetch(AUTOTUNE):
        positives += int(tf.reduce_sum(batch))
        total += int(tf.size(batch))
    return positives / max(total, 1)


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


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        train_steps=args.train_steps,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        early_stopping_patience=args.early_stopping_patience,
        seed=args.seed,
        wide_baseline=args.wide_baseline,
        model=ModelConfig(
            hidden_units=args.hidden_units,
            max_embedding_dim=args.max_embedding_dim,
            learning_rate=args.learning_rate,
            dropout=args.dropout,
        ),
    )


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The training hyperparameters as flags, defaulting to :class:`TrainConfig`'s values."""
    train, model = TrainConfig(), ModelConfig()
    parser.add_argument("--train-steps", type=int, default=train.train_steps)
    parser.add_argument("--steps-per-epoch", type=int, default=train.steps_per_epoch)
    parser.add_argument("--batch-size", type=int, default=train.batch_size)
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train and evaluate the wide-and-deep model.")
    parser.add_argument("--dataset", default="taxi")
    parser.add_argument("--transform-dir", required=True, help="a path or gs:// URI")
    parser.add_argument("--model-dir", required=True, help="a path or gs:// URI")
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    patterns = {
        split: storage.join(args.transform_dir, "examples", f"{split}-*.tfrecord.gz")
        for split in ("train", *EVALUATED_SPLITS)
    }
    examples = {split: pattern for split, pattern in patterns.items() if storage.glob(pattern)}
    result = train_and_evaluate(
        get_dataset(args.dataset),
        args.transform_dir,
        examples,
        args.model_dir,
        config_from_args(args),
    )
    print(json.dumps(result.to_manifest(), indent=2))


if __name__ == "__main__":
    main()
