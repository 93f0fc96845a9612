"""Judge an export on the eval split as serving answers it, beside the served version, and bless.

:func:`evaluate_models` scores the eval split's raw rows with the candidate export and, when a
version is served, with that version (:mod:`pipeline.evaluation.scoring`: ``serving_default`` on
raw ``tf.Example``s), then computes the label kind's metrics (:mod:`pipeline.metrics`) overall and
for every key of every declared slice, and the curves of :mod:`pipeline.evaluation.curves`.

:func:`evaluate_and_bless` is the run's ``evaluate`` stage: the evaluation, the slice comparison
(:mod:`pipeline.evaluation.slice_gate`) and the blessing decision (:func:`pipeline.push.judge`:
the training stage's eval value against the floor and the served version's recorded value, and
the slice gate), written to one directory published whole:

* ``metrics.json``: everything above (the decision under ``blessing``);
* ``predictions.parquet``: per eval row (in split order) the label, each model's prediction and
  its key in every slice, so any number of the report can be recomputed from it;
* ``report.html``: the model report (:mod:`pipeline.evaluation.model_report`).
"""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import metrics as evaluation_metrics
from pipeline import storage
from pipeline.definition import DatasetDefinition
from pipeline.evaluation import curves, model_report, scoring
from pipeline.evaluation.slice_gate import SliceGate, compare_slices
from pipeline.evaluation.slice_keys import slice_keys
from pipeline.push import BlessingRule, PushDecision, judge, served_baseline

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.parquet"
REPORT_FILE = "report.html"
CANDIDATE, SERVED = "candidate", "served"
SLICE_COLUMN_PREFIX = "slice."


@dataclasses.dataclass(frozen=True)
class EvaluatedModel:
    """An export under evaluation: its role (candidate or served), where it is, its version."""

    role: str
    export_dir: str
    version: int | None = None


@dataclasses.dataclass
class Evaluation:
    """Labels, each model's predictions and each slice's keys for the eval rows, and what
    follows from them (:meth:`to_json`)."""

    dataset: DatasetDefinition
    split_dir: str
    labels: np.ndarray
    models: list[EvaluatedModel]
    predictions: dict[str, np.ndarray]
    keys: dict[str, np.ndarray]
    key_order: dict[str, list[str]]

    @property
    def rows(self) -> int:
        return len(self.labels)

    def metrics(self, role: str, rows: np.ndarray | None = None) -> dict[str, float]:
        predictions = self.predictions[role]
        labels = self.labels if rows is None else self.labels[rows]
        predictions = predictions if rows is None else predictions[rows]
        return evaluation_metrics.evaluate(self.dataset.label_kind, labels, predictions)

    def to_json(self) -> dict[str, Any]:
        head = self.dataset.label.head
        return {
            "dataset": self.dataset.name,
            "label": self.dataset.label.describe(),
            "kind": str(self.dataset.label_kind),
            "class_names": list(self.dataset.label.class_names),
            "rows": self.rows,
            "split_dir": str(self.split_dir),
            "blessing_metric": head.blessing_metric,
            "higher_is_better": head.higher_is_better,
            "metric_names": list(head.metrics),
            "models": {
                m.role: {
                    "export_dir": str(m.export_dir),
                    "version": m.version,
                    "metrics": self.metrics(m.role),
                    "curves": curves.curves(self.dataset, self.labels, self.predictions[m.role]),
                }
                for m in self.models
            },
            "slices": [self._slice_json(one) for one in self.dataset.slices],
        }

    def _slice_json(self, one) -> dict[str, Any]:
        keys = self.keys[one.name]
        entries = []
        for key in self.key_order[one.name]:
            rows = keys == key
            entry: dict[str, Any] = {"key": key, "examples": int(rows.sum())}
            for model in self.models:
                entry[model.role] = self.metrics(model.role, rows)
            entries.append(entry)
        return {
            "name": one.name,
            "column": one.column,
            "description": one.describe(),
            "min_examples": one.min_examples,
            "keys": entries,
        }

    def predictions_table(self) -> pa.Table:
        """One row per eval row: label, each model's prediction, each slice's key."""
        columns: dict[str, pa.Array] = {
            "row": pa.array(np.arange(self.rows, dtype=np.int64)),
            "label": pa.array(self.labels),
        }
        for role, values in self.predictions.items():
            columns[role] = pa.array(values.tolist() if values.ndim > 1 else values)
        for name, keys in self.keys.items():
            columns[SLICE_COLUMN_PREFIX + name] = pa.array(keys.astype(str).tolist(), pa.string())
        return pa.table(columns)


def evaluate_models(
    dataset: DatasetDefinition,
    split_dir: str,
    candidate: EvaluatedModel,
    served: EvaluatedModel | None = None,
    batch_size: int = scoring.BATCH_SIZE,
) -> Evaluation:
    """Score the split's rows with both models and key them by every declared slice."""
    wanted = [c.name for c in dataset.serving_columns]
    wanted += [s.column for s in dataset.slices if s.column not in wanted]
    table = scoring.read_split_table(str(split_dir), [*wanted, dataset.label.name])
    labels = table.column(dataset.label.name).to_numpy()
    models = [candidate, *([served] if served else [])]
    predictions = {}
    for model in models:
        try:
            predictions[model.role] = scoring.predict(dataset, model.export_dir, table, batch_size)
        except Exception as error:
            raise RuntimeError(
                f"scoring the eval rows with the {model.role} model {model.export_dir} failed: "
                f"{error}"
            ) from error
    keys, order = {}, {}
    for one in dataset.slices:
        column_type = dataset.column(one.column).type
        keys[one.name], order[one.name] = slice_keys(one, table.column(one.column), column_type)
    return Evaluation(dataset, str(split_dir), labels, models, predictions, keys, order)


@dataclasses.dataclass(frozen=True)
class BlessingSettings:
    """How the evaluate stage blesses (see :mod:`pipeline.push` and the slice gate)."""

    floor: float | None = None  # default: the trivial baseline's eval value
    tolerance: float = 0.01
    slice_gate: SliceGate = dataclasses.field(default_factory=SliceGate)


@dataclasses.dataclass
class EvaluationResult:
    output_dir: str
    evaluation: dict[str, Any]
    decision: PushDecision

    @property
    def report_html(self) -> str:
        return storage.join(self.output_dir, REPORT_FILE)

    def artifacts(self) -> dict[str, str]:
        return {
            f"evaluation/{name}": storage.join(self.output_dir, name)
            for name in (METRICS_FILE, PREDICTIONS_FILE, REPORT_FILE)
        }

    def to_manifest(self) -> dict[str, Any]:
        models = self.evaluation["models"]
        return {
            "rows": self.evaluation["rows"],
            "models": {
                role: {k: m[k] for k in ("export_dir", "version", "metrics")}
                for role, m in models.items()
            },
            "blessing": self.decision.to_json(),
            "metrics_json": storage.join(self.output_dir, METRICS_FILE),
            "report_html": self.report_html,
        }


def evaluate_and_bless(
    dataset: DatasetDefinition,
    split_dir: str,
    export_dir: str,
    model_base: str,
    train_metrics: dict[str, Any],
    settings: BlessingSettings,
    output_dir: str,
    title: str,
) -> EvaluationResult:
    """The evaluate stage's work (see the module docstring); ``output_dir`` appears whole."""
    head = dataset.label.head
    metric = head.blessing_metric
    baseline_version, baseline_value = served_baseline(model_base, metric)
    served = None
    if baseline_version is not None:
        served_dir = storage.join(model_base, str(baseline_version))
        served = EvaluatedModel(SERVED, served_dir, baseline_version)
    evaluation = evaluate_models(
        dataset, split_dir, EvaluatedModel(CANDIDATE, str(export_dir)), served
    )
    payload = evaluation.to_json()
    payload["training_stage"] = _training_stage_metrics(train_metrics, head.baseline)
    floor = settings.floor
    if floor is None:
        floor = float(payload["training_stage"]["trivial_baseline"][metric])
    rule = BlessingRule(metric, head.higher_is_better, floor, settings.tolerance)
    value = float(train_metrics["eval"][metric])
    slices = compare_slices(payload, settings.slice_gate)
    decision = judge(value, rule, baseline_version, baseline_value, slices)
    payload["blessing"] = decision.to_json()
    with storage.staged_directory(output_dir) as staging:
        storage.write_text_atomic(
            storage.join(staging, METRICS_FILE),
            json.dumps(payload, indent=2, sort_keys=True, allow_nan=True) + "\n",
        )
        buffer = io.BytesIO()
        pq.write_table(evaluation.predictions_table(), buffer)
        storage.write_bytes_atomic(storage.join(staging, PREDICTIONS_FILE), buffer.getvalue())
        html = model_report.render_html(payload, evaluation_rows(evaluation), title)
        storage.write_text_atomic(storage.join(staging, REPORT_FILE), html)
    return EvaluationResult(str(output_dir), payload, decision)


def evaluation_rows(evaluation: Evaluation) -> dict[str, Any]:
    """What the report's scatter plots draw: the labels and predictions of the sampled rows."""
    rows = curves.scatter_rows(evaluation.rows)
    return {
        "rows": rows,
        "labels": evaluation.labels[rows].astype(np.float64).tolist(),
        "predictions": {
            role: values[rows].tolist() for role, values in evaluation.predictions.items()
        },
    }


def _training_stage_metrics(train_metrics: dict[str, Any], baseline: str) -> dict[str, Any]:
    """The training stage's eval metrics (on the transformed eval TFRecords): the model, the
    wide part alone and the trivial baseline."""
    return {
        "model": train_metrics.get("eval", {}),
        "wide_only": train_metrics.get("wide_baseline_eval", {}),
        "trivial_baseline": train_metrics.get(f"{baseline}_baseline_eval", {}),
        "trivial_baseline_name": baseline,
    }
