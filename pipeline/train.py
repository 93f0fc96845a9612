"""Train the wide-and-deep model on the transformed TFRecords and evaluate it.

The input pipeline keeps the trainer busy: shards are read in parallel (interleave), records are
shuffled, batched *before* parsing so one vectorized ``parse_example`` handles a whole batch, and
the next batches are prefetched while the model trains on the current one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras

from pipeline.artifacts import staged_directory
from pipeline.dataset import DatasetDefinition
from pipeline.datasets import get_dataset
from pipeline.model import ModelConfig, build_model, model_inputs

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    train_steps: int = 2000
    steps_per_epoch: int = 200
    batch_size: int = 256
    early_stopping_patience: int = 3
    seed: int = 42
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)


@dataclasses.dataclass
class TrainResult:
    model_dir: Path
    metrics: dict[str, dict[str, float]]
    seconds: float
    steps: int

    def to_manifest(self) -> dict:
        return {
            "model_dir": str(self.model_dir),
            "metrics": self.metrics,
            "steps": self.steps,
            "seconds": round(self.seconds, 3),
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

    return batches.map(parse, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def _count_positive(dataset: tf.data.Dataset) -> tuple[int, int]:
    positives = total = 0
    for _, labels in dataset:
        labels = labels.numpy()
        positives += int(labels.sum())
        total += len(labels)
    return positives, total


def majority_baseline(train_positive_rate: float, eval_positive_rate: float) -> dict[str, float]:
    """Metrics of always predicting the training split's majority class."""
    predicts_positive = train_positive_rate >= 0.5
    accuracy = eval_positive_rate if predicts_positive else 1.0 - eval_positive_rate
    return {"auc": 0.5, "accuracy": round(accuracy, 6)}


def train_and_evaluate(
    dataset: DatasetDefinition,
    transform_dir: Path,
    example_patterns: dict[str, str],
    model_dir: Path,
    config: TrainConfig = TrainConfig(),
) -> TrainResult:
    """Fit on train with early stopping on eval; report eval/test metrics and the baseline."""
    started = time.perf_counter()
    tf_keras.utils.set_random_seed(config.seed)
    tft_output = tft.TFTransformOutput(str(transform_dir))
    label = dataset.label.name
    train_ds = make_dataset(
        example_patterns["train"], tft_output, label, config.batch_size, True, True, config.seed
    )
    eval_ds = make_dataset(example_patterns["eval"], tft_output, label, 1024, False, False)
    model = build_model(model_inputs(dataset, tft_output), config.model)
    epochs = max(1, config.train_steps // config.steps_per_epoch)
    with staged_directory(Path(model_dir)) as staging:
        history = model.fit(
            train_ds,
            validation_data=eval_ds,
            epochs=epochs,
            steps_per_epoch=config.steps_per_epoch,
            callbacks=[
                tf_keras.callbacks.EarlyStopping(
                    monitor="val_auc",
                    mode="max",
                    patience=config.early_stopping_patience,
                    restore_best_weights=True,
                ),
                tf_keras.callbacks.TensorBoard(log_dir=str(staging / "logs"), write_graph=False),
            ],
            verbose=0,
        )
        metrics = {}
        for split in ("eval", "test"):
            if split in example_patterns:
                split_ds = make_dataset(
                    example_patterns[split], tft_output, label, 1024, False, False
                )
                values = model.evaluate(split_ds, verbose=0, return_dict=True)
                metrics[split] = {k: round(float(v), 6) for k, v in values.items()}
        train_pos, train_total = _count_positive(
            make_dataset(example_patterns["train"], tft_output, label, 4096, False, False)
        )
        eval_pos, eval_total = _count_positive(eval_ds)
        metrics["majority_baseline_eval"] = majority_baseline(
            train_pos / max(train_total, 1), eval_pos / max(eval_total, 1)
        )
        metrics["positive_rate"] = {
            "train": round(train_pos / max(train_total, 1), 6),
            "eval": round(eval_pos / max(eval_total, 1), 6),
        }
        model.save(str(staging / "keras"), save_format="tf")
    steps = len(history.history["loss"]) * config.steps_per_epoch
    return TrainResult(Path(model_dir), metrics, time.perf_counter() - started, steps)


def load_trained_model(model_dir: Path) -> tf_keras.Model:
    return tf_keras.models.load_model(str(Path(model_dir) / "keras"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train and evaluate the wide-and-deep model.")
    parser.add_argument("--dataset", default="taxi")
    parser.add_argument("--transform-dir", type=Path, required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--train-steps", type=int, default=TrainConfig.train_steps)
    args = parser.parse_args(argv)
    examples = {
        split: str(args.transform_dir / "examples" / f"{split}-*.tfrecord.gz")
        for split in ("train", "eval", "test")
        if list((args.transform_dir / "examples").glob(f"{split}-*"))
    }
    result = train_and_evaluate(
        get_dataset(args.dataset),
        args.transform_dir,
        examples,
        args.model_dir,
        TrainConfig(train_steps=args.train_steps),
    )
    print(json.dumps(result.to_manifest(), indent=2))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
