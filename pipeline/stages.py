"""The pipeline's stages as plain functions over one run directory.

Each stage reads what earlier stages left in the run directory (fixed paths, see
:class:`RunContext`) and records what it did in its manifest entry. That makes every stage
runnable on its own, in another process or on another day: ``pipeline.run`` calls them in one
process tree, and the Airflow DAG calls them one task at a time with ``--stages NAME``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline import canonical_saved_model, storage
from pipeline.background import StartedProcess, prewarm
from pipeline.definition import DatasetDefinition
from pipeline.verdicts import Verdict

if TYPE_CHECKING:  # TensorFlow loads only in the stages that train
    from pipeline.train import BaselineRequest

SPLITS_DIR = "splits"
STATISTICS_DIR = "statistics"
TRANSFORM_DIR = "transform"
MODEL_DIR = "model"
SERVING_DIR = "serving"
EVALUATION_DIR = "evaluation"


class StageFailed(Verdict):
    """A stage stopped the run on purpose; the message says which stage and why."""


@dataclasses.dataclass
class RunContext:
    """What a stage needs: the dataset, the run's arguments and directory, and the manifest."""

    dataset: DatasetDefinition
    run_dir: str  # a local path or a gs:// URI
    manifest: dict[str, Any]
    beam_args: list[str]
    data_dir: Path = Path("data")
    db: Path | None = None
    model_name: str | None = None  # default: the definition's model name
    train_steps: int = 1000
    parity_rows: int = 200
    # Derived columns' parity replay: the eval split's last N days, at least 200 rows (None: all),
    # into ``online_store`` (None: a fresh SQLite file).
    parity_replay_days: int | None = 14
    online_store: str | None = None
    predict_rows: int = 3
    start: str | None = None
    end: str | None = None
    # Where blessed models are published for serving (TF Serving layout); None: models/<name>.
    push_base: str | None = None
    # The warehouse split's engine: "duckdb" (the embedded file) or "bigquery", whose
    # BigQueryOptions fields (project, destination_dataset, location, ...) are in ``bigquery``.
    warehouse_engine: str = "duckdb"
    bigquery: dict[str, Any] | None = None
    source_table: str | None = None
    duplicates: str | None = None  # keep | drop | block; default: the definition's
    sample_fraction: float = 1.0
    # Blessing (decided by the evaluate stage, published by push): the eval value of the label
    # kind's metric must beat ``metric_floor`` (default: the run's trivial baseline) and be
    # within ``tolerance`` of the served version's; with ``slice_gate`` no declared slice may be
    # worse than the served version's on the same rows by more than ``slice_tolerance``.
    metric_floor: float | None = None
    tolerance: float = 0.01
    slice_gate: bool = True
    slice_tolerance: float = 0.05
    models_dir: str = "models"  # push base default: <models_dir>/<model name>
    # Processes of stages started early (see EARLY_STARTS), by stage name, until they run.
    started: dict[str, StartedProcess] = dataclasses.field(default_factory=dict)
    # Warm processes (see WARM_STARTS) waiting for their early start's command line.
    warm: dict[str, StartedProcess] = dataclasses.field(default_factory=dict)

    @property
    def served_model_name(self) -> str:
        return self.model_name or self.dataset.served_model_name

    @property
    def push_base_dir(self) -> str:
        return self.push_base or storage.join(self.models_dir, self.served_model_name)

    # ---- where earlier stages put things ------------------------------------------------------

    def split_dirs(self) -> dict[str, str]:
        root = storage.join(self.run_dir, SPLITS_DIR)
        splits = {name: storage.join(root, name) for name in storage.subdirs(root)}
        if "train" not in splits:
            raise StageFailed(f"no train split under {root}: run the warehouse stage first")
        return splits

    @property
    def transform_dir(self) -> str:
        return storage.join(self.run_dir, TRANSFORM_DIR)

    @property
    def model_dir(self) -> str:
        return storage.join(self.run_dir, MODEL_DIR)

    @property
    def model_base(self) -> str:
        return storage.join(self.run_dir, SERVING_DIR, self.served_model_name)

    def stage_record(self, name: str) -> dict[str, Any]:
        record = self.manifest["stages"].get(name)
        if not record or record.get("status") != "succeeded":
            raise StageFailed(f"stage {name!r} has not succeeded in {self.run_dir}")
        return record

    def export_dir(self) -> str:
        return self.stage_record("export")["export_dir"]

    def example_patterns(self) -> dict[str, str]:
        return dict(self.stage_record("transform")["examples"])


def record_artifacts(ctx: RunContext, record: dict, artifacts: dict[str, str]) -> None:
    """Digest every artifact a stage wrote, in its record and in the run's ``artifacts`` map.

    A file's digest is its SHA-256; a directory's covers every file's relative path and bytes
    (:func:`pipeline.storage.tree_digest`). Two runs on the same inputs give the same digests.
    """
    digests = {}
    for name, location in artifacts.items():
        digest = (
            storage.sha256(location) if storage.isfile(location) else storage.tree_digest(location)
        )
        digests[name] = {"path": str(location), "sha256": digest}
    record["artifacts"] = digests
    ctx.manifest.setdefault("artifacts", {}).update(digests)


# ---- stages ---------------------------------------------------------------------------------


def stage_data(ctx: RunContext, record: dict) -> None:
    """Make sure the embedded warehouse exists (fetches and loads the dataset's source once).

    With ``--db`` the given warehouse file is used as it is; with the BigQuery engine the source
    table lives in BigQuery: nothing to prepare here.
    """
    from pipeline import data

    table = ctx.source_table or ctx.dataset.table
    if ctx.warehouse_engine == "bigquery":
        record.update(engine="bigquery", table=table)
        return
    if ctx.db is not None and not Path(ctx.db).is_file():
        raise StageFailed(f"warehouse file {ctx.db} not found")
    db_path = ctx.db or data.ensure_warehouse(ctx.dataset, ctx.data_dir)
    record.update(engine="duckdb", warehouse_file=str(db_path), table=table)


def stage_warehouse(ctx: RunContext, record: dict) -> None:
    """The warehouse's BigQuery SQL (on BigQuery or the embedded DuckDB): split into Parquet."""
    from pipeline import warehouse

    data_record = ctx.stage_record("data")
    splits_dir = storage.join(ctx.run_dir, SPLITS_DIR)
    options: dict[str, Any] = {
        "table": ctx.source_table,
        "duplicates": ctx.duplicates,
        "sample_fraction": ctx.sample_fraction,
    }
    if ctx.warehouse_engine == "bigquery":
        bigquery = warehouse.BigQueryOptions(**(ctx.bigquery or {}), export_uri=splits_dir)
        options.update(engine="bigquery", bigquery=bigquery)
    else:
        options.update(warehouse=Path(data_record["warehouse_file"]))
    config = warehouse.default_split_config(ctx.dataset, start=ctx.start, end=ctx.end, **options)
    split = warehouse.run_split(config, splits_dir, overwrite=True)
    record.update(split.to_manifest())
    ctx.manifest["rows_per_split"] = split.row_counts
    record_artifacts(ctx, record, {f"splits/{n}": d for n, d in split.split_dirs.items()})
    if not split.row_counts.get("train"):
        raise StageFailed(
            f"the warehouse selected no training rows from {split.config['table']} "
            f"(input {split.input_rows} rows, removed {split.removed_rows})"
        )


def stage_validation(ctx: RunContext, record: dict) -> None:
    """TFDV statistics of every split, checked against the committed schema; blocking stops."""
    from pipeline import validation
    from pipeline.validation.report import write_html

    stats_dir = storage.join(ctx.run_dir, STATISTICS_DIR)
    schema = validation.load_schema(ctx.dataset)
    outputs = {name: storage.join(stats_dir, f"{name}.pb") for name in ctx.split_dirs()}
    computed = validation.compute_split_statistics(
        {outputs[name]: f"{path}/*.parquet" for name, path in ctx.split_dirs().items()},
        ctx.beam_args,
        exclude=(ctx.dataset.label.name,),
    )
    stats = {name: computed[output] for name, output in outputs.items()}
    reports = validation.validate_splits(stats, schema)
    html = write_html(
        storage.join(stats_dir, "report.html"),
        stats,
        reports,
        title=f"Validation of {ctx.dataset.name}",
    )
    record["reports"] = {name: r.to_manifest() for name, r in reports.items()}
    record["report_html"] = str(html)
    ctx.manifest["schema_sha256"] = storage.sha256(validation.schema_path(ctx.dataset))
    files = {f"statistics/{name}": storage.join(stats_dir, f"{name}.pb") for name in stats}
    record_artifacts(ctx, record, {**files, "statistics/report.html": str(html)})
    ctx.manifest["anomalies"] = [
        {"split": name, **anomaly}
        for name, report in record["reports"].items()
        for anomaly in report["anomalies"]
    ]
    for report in reports.values():
        validation.check(report)


def transform_runs_beside(ctx: RunContext) -> bool:
    """Whether the transform may run in a process of its own beside validation.

    It needs the DirectRunner (a portable cluster belongs to this process) and a registered
    dataset (the child finds the definition by its name).
    """
    from pipeline.datasets import is_registered
    from pipeline.runners import runs_in_this_process

    return is_registered(ctx.dataset) and runs_in_this_process(ctx.beam_args)


def warm_transform(ctx: RunContext) -> StartedProcess | None:
    """The transform's process, started with the run: it imports TensorFlow, TFT and Beam (3-4
    s) while the data and warehouse stages run, then waits for :func:`start_transform`."""
    return prewarm("pipeline.transform") if transform_runs_beside(ctx) else None


def start_transform(ctx: RunContext) -> StartedProcess | None:
    """Start the transform stage's process, which needs only the splits, or None where it must
    run in the stage's own process (see :func:`transform_runs_beside`).

    Under ``pipeline.run`` it then runs beside validation: both are mostly Python building and
    running a Beam job, one core each. Its output is staged like any transform's: a run that
    validation stops kills the process, and nothing half-written is left where the train stage
    would look.
    """
    if not transform_runs_beside(ctx):
        return None
    splits = [f"--split={name}={path}" for name, path in ctx.split_dirs().items()]
    argv = [
        "--dataset", ctx.dataset.name, *splits,
        "--output", ctx.transform_dir,
        "--parent-pid", str(os.getpid()),
        *ctx.beam_args,
    ]  # fmt: skip
    cleanup = lambda: storage.remove_leftovers(ctx.transform_dir)  # noqa: E731
    warm = ctx.warm.pop("transform", None)
    if warm is None:
        return StartedProcess.start([sys.executable, "-m", "pipeline.transform", *argv], cleanup)
    warm.send(argv, cleanup)
    return warm


def stage_transform(ctx: RunContext, record: dict) -> None:
    """TFT: analyze train, transform every split, write TFRecords and the transform graph.

    Under ``pipeline.run`` the work runs in a process started right after the warehouse stage
    (see :data:`EARLY_STARTS`), beside validation; this stage then waits for it.
    """
    from pipeline.transform import run_transform

    started = ctx.started.pop("transform", None)
    if started is None:
        result = run_transform(ctx.dataset, ctx.split_dirs(), ctx.transform_dir, ctx.beam_args)
        record.update(result.to_manifest())
    else:
        returncode, stdout, errors = started.finish()
        if returncode != 0:
            raise RuntimeError(f"the transform failed (exit {returncode}):\n{errors[-4000:]}")
        record.update(json.loads(stdout))
    record["started_early"] = started is not None
    output = record["output_dir"]
    artifacts = {
        "transform/transform_fn": storage.join(output, "transform_fn"),
        "transform/transformed_metadata": storage.join(output, "transformed_metadata"),
        "transform/examples": storage.join(output, "examples"),
    }
    record_artifacts(ctx, record, artifacts)


def stage_train(ctx: RunContext, record: dict) -> None:
    """Train the wide-and-deep model; metrics on eval and test next to the baseline."""
    from pipeline.train import TrainConfig, train_and_evaluate

    canonical_saved_model.align_name_counter()  # the same names whatever ran before

    result = train_and_evaluate(
        ctx.dataset,
        ctx.transform_dir,
        ctx.example_patterns(),
        ctx.model_dir,
        TrainConfig(train_steps=ctx.train_steps),
    )
    record.update(result.to_manifest())
    ctx.manifest["metrics"] = result.metrics
    # The trained model; TensorBoard's event files (timestamps, host names) are not artifacts.
    record_artifacts(ctx, record, {"model": storage.join(ctx.model_dir, "keras")})


def baseline_request(ctx: RunContext) -> BaselineRequest:
    """The run's baseline models (see :class:`pipeline.train.BaselineRequest`)."""
    from pipeline.train import BaselineRequest, TrainConfig

    config = TrainConfig(train_steps=ctx.train_steps)
    return BaselineRequest.of(ctx.dataset, ctx.transform_dir, ctx.example_patterns(), config)


def start_baselines(ctx: RunContext) -> StartedProcess | None:
    """Start the baseline models' training, which needs only the transform's output, or None
    where it must run in the stage's own process (no baselines, or a dataset built in code).

    Under ``pipeline.run`` it then runs beside train, export and parity: on two cores the model
    trains on one and the baselines on the other, which then stays busy while export and parity
    (mostly single-threaded) run.
    """
    request = baseline_request(ctx)
    return request.start() if request.can_run_beside(ctx.dataset) else None


def stage_baselines(ctx: RunContext, record: dict) -> None:
    """The baseline models the model is compared with (wide only; without derived columns).

    Under ``pipeline.run`` they train in a process started right after the transform stage (see
    :data:`EARLY_STARTS`); this stage then waits for it. Their TensorBoard logs go beside the
    model's.
    """
    request = baseline_request(ctx)
    started = ctx.started.pop("baselines", None)
    log_dir = storage.join(ctx.model_dir, "logs")
    if started is None:
        trained = request.run(ctx.dataset, log_dir)
    else:
        trained = request.collect(started, log_dir)
    record["started_early"] = started is not None
    record.update(trained.to_manifest())
    ctx.manifest.setdefault("metrics", {}).update(trained.metrics)


def stage_export(ctx: RunContext, record: dict) -> None:
    """SavedModel with the transform graph inside, in the TF Serving layout."""
    from pipeline.export import export_serving_model

    canonical_saved_model.align_name_counter()  # the same names whatever ran before
    result = export_serving_model(ctx.dataset, ctx.model_dir, ctx.transform_dir, ctx.model_base)
    record.update(result.to_manifest())
    record_artifacts(ctx, record, {"export": result.export_dir})


def stage_parity(ctx: RunContext, record: dict) -> None:
    """Prove the export computes the training features (and predictions); fail on any gap."""
    from pipeline.parity import check_parity

    report = check_parity(
        ctx.dataset,
        ctx.transform_dir,
        ctx.export_dir(),
        ctx.split_dirs()["eval"],
        rows=ctx.parity_rows,
        model_dir=ctx.model_dir,
        beam_args=ctx.beam_args,
    )
    record.update(report.to_manifest())
    if not report.passed:
        raise StageFailed(
            "serving features differ from training features:\n  "
            + "\n  ".join(report.mismatches[:20])
        )
    if ctx.dataset.has_derived_columns:
        _online_parity(ctx, record)


def _online_parity(ctx: RunContext, record: dict) -> None:
    """Window features and joins: the streaming path and the online store against the SQL."""
    from pipeline.online.replay import replay

    warehouse = ctx.stage_record("data").get("warehouse_file")
    if warehouse is None:
        record["online"] = {"skipped": "events are replayed from the embedded warehouse only"}
        return
    report = replay(
        ctx.dataset,
        Path(warehouse),
        ctx.split_dirs()["eval"],
        store_uri=ctx.online_store,
        days=ctx.parity_replay_days,
        export_dir=ctx.export_dir(),
    )
    record["online"] = report.to_manifest()
    if not report.passed:
        raise StageFailed(
            "the online store's derived columns differ from the batch SQL's:\n  "
            + "\n  ".join(report.mismatches[:20])
        )


def start_predict(ctx: RunContext) -> StartedProcess:
    """Start the predict stage's fresh process; it reads only the export and the eval split."""
    return StartedProcess.start([
        sys.executable, "-m", "pipeline.predict",
        "--dataset", ctx.dataset.name,
        "--export-dir", str(ctx.export_dir()),
        "--split-dir", str(ctx.split_dirs()["eval"]),
        "--rows", str(ctx.predict_rows),
    ])  # fmt: skip


def stage_predict(ctx: RunContext, record: dict) -> None:
    """Load the export in a fresh process and predict raw eval rows, as a client would.

    Under ``pipeline.run`` the process starts as soon as the export exists (see
    :data:`EARLY_STARTS`) and runs beside parity and evaluate; this stage then waits for it.
    """
    started = ctx.started.pop("predict", None)
    record["started_early"] = started is not None
    started = started or start_predict(ctx)
    returncode, output, errors = started.finish()
    record["process_seconds"] = round(time.perf_counter() - started.started_at, 3)
    if returncode != 0:
        raise StageFailed(f"prediction from the export failed:\n{errors[-4000:]}")
    result = json.loads(output.strip().splitlines()[-1])
    record.update(result)
    ctx.manifest["predictions"] = result["predictions"]


def stage_evaluate(ctx: RunContext, record: dict) -> None:
    """Judge the export against the served version on the eval rows, overall and per slice, and
    bless it or not (the push stage publishes the decision); write the model report.

    Both models answer the eval split's raw rows through ``serving_default``, as serving does.
    Not being blessed is a normal outcome (recorded, the run still succeeds).
    """
    from pipeline.evaluation.evaluator import BlessingSettings, evaluate_and_bless
    from pipeline.evaluation.slice_gate import SliceGate

    export = ctx.stage_record("export")
    settings = BlessingSettings(
        floor=ctx.metric_floor,
        tolerance=ctx.tolerance,
        slice_gate=SliceGate(enabled=ctx.slice_gate, tolerance=ctx.slice_tolerance),
    )
    result = evaluate_and_bless(
        ctx.dataset,
        ctx.split_dirs()["eval"],
        export["export_dir"],
        ctx.push_base_dir,
        {**ctx.stage_record("train")["metrics"], **ctx.stage_record("baselines")["metrics"]},
        settings,
        storage.join(ctx.run_dir, EVALUATION_DIR),
        title=f"Model report of {ctx.dataset.name}, run {ctx.manifest.get('run_id', '')}",
    )
    record.update(result.to_manifest())
    # The push stage publishes this decision only for the export it was made on.
    record["export_sha256"] = export["artifacts"]["export"]["sha256"]
    record_artifacts(ctx, record, result.artifacts())


def stage_push(ctx: RunContext, record: dict) -> None:
    """Publish the export if the evaluate stage blessed it, as a new version of the push base.

    The decision (the label kind's metric against the floor and the served version, and the
    slice gate) is the evaluate stage's; it holds only for the export it judged and while the
    version it compared with is still the one served. Not being blessed is a normal outcome
    (recorded, the run still succeeds): the served version simply stays.
    """
    from pipeline.push import PushDecision, publish

    evaluated = ctx.stage_record("evaluate")
    export = ctx.stage_record("export")
    if evaluated.get("export_sha256") != export["artifacts"]["export"]["sha256"]:
        raise StageFailed("the export changed since the evaluate stage judged it: evaluate again")
    decision = PushDecision.from_json(evaluated["blessing"])
    decision = publish(export["export_dir"], ctx.push_base_dir, decision)
    record.update(decision.to_json())
    ctx.manifest["pushed"] = decision.blessed


Stage = Callable[[RunContext, dict], None]
# Stages whose work is a process of its own that may start as soon as another stage succeeded
# (a start function may return None: then the stage does its work itself). The transform needs
# only the splits, so it runs beside validation; the baselines need only the transform, so they
# train beside train, export and parity; predict needs only the export, so it runs beside parity
# and evaluate (on two cores its 7 s of TensorFlow start-up then cost little).
EARLY_STARTS: dict[str, tuple[str, Callable[[RunContext], StartedProcess | None]]] = {
    "transform": ("warehouse", start_transform),
    "baselines": ("transform", start_baselines),
    "predict": ("export", start_predict),
}
# Early starts whose process may start sooner still, with the run, and wait warm for their
# command line (see pipeline.background.prewarm): a start function may return None.
WARM_STARTS: dict[str, Callable[[RunContext], StartedProcess | None]] = {
    "transform": warm_transform,
}
# Stages that run Beam jobs (with the run's Beam flags).
BEAM_STAGES = frozenset({"validation", "transform", "parity"})

STAGES: dict[str, Stage] = {
    "data": stage_data,
    "warehouse": stage_warehouse,
    "validation": stage_validation,
    "transform": stage_transform,
    "train": stage_train,
    "export": stage_export,
    "parity": stage_parity,
    "baselines": stage_baselines,
    "evaluate": stage_evaluate,
    "predict": stage_predict,
    "push": stage_push,
}
