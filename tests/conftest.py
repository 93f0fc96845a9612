"""Shared fixtures: small typed split files and one real transform run reused by several tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.datasets import get_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPANIES = ["Flash Cab", "Yellow Cab", "Blue Diamond", "City Service", "Sun Taxi"]
PAYMENTS = ["Cash", "Credit Card", "Mobile", "Prcard"]

_ARROW_TYPES = {"INT64": pa.int64(), "FLOAT64": pa.float64(), "STRING": pa.string()}


@pytest.fixture(scope="session")
def taxi():
    return get_dataset("taxi")


def make_rows(rows: int, seed: int, fare_scale: float = 1.0, hour_shift: int = 0) -> pa.Table:
    """A taxi-shaped split file: every raw column, some nulls, and a learnable label.

    ``fare_scale`` and ``hour_shift`` let a test give eval a different distribution from train.
    """
    rng = np.random.default_rng(seed)
    miles = rng.gamma(2.0, 2.0, rows)
    fare = np.round((3.25 + 2.25 * miles + rng.normal(0, 1, rows).clip(-2, 2)) * fare_scale, 2)
    payment = rng.choice(PAYMENTS, rows, p=[0.45, 0.45, 0.05, 0.05])
    tip_rate = np.where(payment == "Cash", 0.0, rng.uniform(0.05, 0.35, rows))
    timestamps = 1_400_000_000 + rng.integers(0, 365 * 86400, rows)
    hours = (timestamps % 86400) // 3600
    data = {
        "pickup_community_area": _with_nulls(rng, rng.integers(1, 78, rows), 0.05),
        "fare": fare,
        "trip_start_month": rng.integers(1, 13, rows),
        "trip_start_hour": (hours + hour_shift) % 24,
        "trip_start_day": rng.integers(1, 8, rows),
        "trip_start_timestamp": timestamps,
        "pickup_latitude": _with_nulls(rng, rng.normal(41.9, 0.05, rows), 0.05),
        "pickup_longitude": _with_nulls(rng, rng.normal(-87.65, 0.05, rows), 0.05),
        "dropoff_latitude": _with_nulls(rng, rng.normal(41.9, 0.05, rows), 0.1),
        "dropoff_longitude": _with_nulls(rng, rng.normal(-87.65, 0.05, rows), 0.1),
        "trip_miles": np.round(miles, 2),
        "pickup_census_tract": _with_nulls(rng, rng.integers(17031010100, 17031010200, rows), 0.9),
        "dropoff_census_tract": _with_nulls(rng, rng.integers(17031010100, 17031010200, rows), 0.3),
        "payment_type": payment.tolist(),
        "company": _with_nulls(rng, rng.choice(COMPANIES, rows), 0.3),
        "trip_seconds": _with_nulls(rng, (miles * 240 + rng.integers(60, 600, rows)), 0.01),
        "dropoff_community_area": _with_nulls(rng, rng.integers(1, 78, rows), 0.05),
        "tips": np.round(fare * tip_rate, 2),
    }
    # Window counts as the warehouse's SQL derives them (here: plausible values, a few missing).
    area = data["pickup_community_area"]
    data["pickup_area_trips_count_1h"] = [
        None if a is None else int(c) for a, c in zip(area, rng.poisson(2, rows), strict=True)
    ]
    data["pickup_area_trips_count_1d"] = [
        None if a is None else int(c) for a, c in zip(area, rng.poisson(40, rows), strict=True)
    ]
    # The label as the warehouse's SQL computes it: in double precision on these values.
    data["big_tipper"] = (np.asarray(data["tips"]) > 0.2 * np.asarray(data["fare"])).astype(int)
    dataset = get_dataset("taxi")
    return pa.table(
        {
            c.name: pa.array(data[c.name], type=_ARROW_TYPES[c.type.split_file_type])
            for c in dataset.split_file_columns
        }
    )


def _with_nulls(rng: np.random.Generator, values: np.ndarray, rate: float) -> list:
    mask = rng.random(len(values)) < rate
    return [None if m else v.item() for v, m in zip(values, mask, strict=True)]


def write_split(directory: Path, table: pa.Table) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, directory / "part-00000.parquet")
    return directory


@pytest.fixture(scope="session")
def small_splits(tmp_path_factory) -> dict[str, Path]:
    """train/eval/test Parquet dirs; eval's fares are 3x train's so leakage would show."""
    root = tmp_path_factory.mktemp("splits")
    return {
        "train": write_split(root / "train", make_rows(3000, seed=1)),
        "eval": write_split(root / "eval", make_rows(600, seed=2, fare_scale=3.0)),
        "test": write_split(root / "test", make_rows(600, seed=3)),
    }


@pytest.fixture(scope="session")
def transform_output(small_splits, taxi, tmp_path_factory):
    """One real TFT analyze+transform over the small splits (DirectRunner)."""
    from pipeline.transform import run_transform

    out = tmp_path_factory.mktemp("transform") / "transform"
    return run_transform(taxi, small_splits, out, ["--runner", "DirectRunner"])


@pytest.fixture(scope="session")
def trained_export(transform_output, taxi, tmp_path_factory):
    """A briefly trained model (its metrics with the baselines') and its serving export."""
    from pipeline.export import export_serving_model
    from pipeline.train import BaselineRequest, TrainConfig, train_and_evaluate

    root = tmp_path_factory.mktemp("model")
    config = TrainConfig(train_steps=100, steps_per_epoch=50)
    args = (taxi, transform_output.output_dir, transform_output.example_patterns)
    baselines = BaselineRequest.of(*args, config)
    beside = baselines.start()
    trained = train_and_evaluate(*args, root / "model", config)
    trained.metrics.update(baselines.collect(beside, str(root / "baseline-logs")).metrics)
    exported = export_serving_model(
        taxi, trained.model_dir, transform_output.output_dir, root / "serving" / "taxi", version=1
    )
    return trained, exported


@pytest.fixture(scope="session")
def portable_cluster():
    """A job server and a pool of two SDK workers for PortableRunner jobs (EXTERNAL workers)."""
    from pipeline.runners import PortableCluster

    with PortableCluster(workers=2) as cluster:
        yield cluster


def subprocess_env() -> dict[str, str]:
    """Environment for running project modules in a child process from the repo root."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


PYTHON = sys.executable


# ---- a GCS server on loopback -------------------------------------------------------------------


@pytest.fixture(scope="session")
def gcs_emulator():
    """A GCS JSON-API emulator on loopback; ``STORAGE_EMULATOR_HOST`` points every client at it.

    Child processes inherit the variable, so ``pipeline.run`` and Beam's DirectRunner use it too.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
         "--port", str(port), "--in-memory"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("the GCS emulator did not start") from None
            time.sleep(0.1)
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    try:
        yield os.environ["STORAGE_EMULATOR_HOST"]
    finally:
        server.terminate()
        server.wait(timeout=10)
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous


@pytest.fixture
def gcs_bucket(gcs_emulator) -> str:
    """A fresh, empty bucket on the emulator, as ``gs://<name>``."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    name = f"test-{uuid.uuid4().hex[:12]}"
    gcs.Client(project="test", credentials=AnonymousCredentials()).create_bucket(name)
    return f"gs://{name}"


# ---- a Redis server on loopback (the online store) ---------------------------------------------


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A fresh ``redis-server`` (Debian's, installed by ``make test``) on a free loopback port,
    without persistence; stopped at the end of the session."""
    import shutil

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (make redis, or apt-get install it)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    directory = tmp_path_factory.mktemp("redis")
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                if connection.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError("redis-server did not start")
        time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


# ---- two exports for the slice gate and the model report ------------------------------------

SLICE_COMPANY = "Sun Taxi"


def two_signal_rows(rows: int, seed: int) -> pa.Table:
    """Taxi-shaped rows whose label follows one rule inside a slice and another outside it.

    Outside the slice (every company but :data:`SLICE_COMPANY`) the label is the usual one of
    :func:`make_rows` (a cash trip is never a big tipper); inside it, the label is whether the
    trip started at noon or later. A model can learn both, but only from rows that carry them.
    """
    table = make_rows(rows, seed)
    in_slice = np.array(table.column("company").to_pylist(), dtype=object) == SLICE_COMPANY
    afternoon = (table.column("trip_start_hour").to_numpy() >= 12).astype(np.int64)
    label = np.where(in_slice, afternoon, table.column("big_tipper").to_numpy())
    index = table.schema.get_field_index("big_tipper")
    return table.set_column(index, "big_tipper", pa.array(label, pa.int64()))


def shuffle_labels(table: pa.Table, rows: np.ndarray, seed: int) -> pa.Table:
    """The labels of ``rows`` (a boolean mask) permuted among themselves: what a model can learn
    from those rows is gone, their share of positives stays."""
    label = table.column("big_tipper").to_numpy().copy()
    label[rows] = np.random.default_rng(seed).permutation(label[rows])
    index = table.schema.get_field_index("big_tipper")
    return table.set_column(index, "big_tipper", pa.array(label, pa.int64()))


@pytest.fixture(scope="session")
def slice_models(taxi, tmp_path_factory):
    """Two real exports on one transform graph, for the slice gate and the model report.

    ``served`` was trained when the labels outside the slice were scrambled (it learned only the
    slice's rule), ``candidate`` when the slice's labels were (it learned only the rule outside
    the slice). On eval rows that follow both rules the candidate is better overall and worse
    on the slice ``company = Sun Taxi``.
    """
    from pipeline.export import export_serving_model
    from pipeline.train import TrainConfig, train_and_evaluate
    from pipeline.transform import run_transform

    root = tmp_path_factory.mktemp("slice-models")
    train = two_signal_rows(2400, seed=21)
    in_slice = np.array(train.column("company").to_pylist(), dtype=object) == SLICE_COMPANY
    # The two training sets differ in their labels only, so either one analyzed gives the same
    # transform graph: the served model's is the ``train`` split the transform analyzes.
    splits = {
        "train": write_split(root / "splits" / "train", shuffle_labels(train, ~in_slice, 23)),
        "candidate_train": write_split(root / "candidate_train",
                                       shuffle_labels(train, in_slice, seed=24)),
        "eval": write_split(root / "splits" / "eval", two_signal_rows(1200, seed=22)),
    }  # fmt: skip
    transform = run_transform(taxi, splits, root / "transform", ["--runner", "DirectRunner"])
    patterns = transform.example_patterns
    models = {}
    for role, version, train_split in (("served", 1, "train"), ("candidate", 2, "candidate_train")):
        trained = train_and_evaluate(
            taxi,
            transform.output_dir,
            {"train": patterns[train_split], "eval": patterns["eval"]},
            root / role / "model",
            TrainConfig(train_steps=150, steps_per_epoch=75),
        )
        exported = export_serving_model(
            taxi, trained.model_dir, transform.output_dir, root / role / "serving", version=version
        )
        models[role] = (trained, exported)
    return {"splits": splits, "transform": transform, **models}


def prepared_run(run_dir: Path, slice_models: dict, role: str, run_id: str) -> Path:
    """A run directory as the train, baselines and export stages leave it, with ``role``'s
    export: the stages from ``evaluate`` on can continue it (``pipeline.run --stages
    evaluate,push``)."""
    import shutil

    from pipeline import storage

    for split in ("train", "eval"):
        shutil.copytree(slice_models["splits"][split], run_dir / "splits" / split)
    trained, exported = slice_models[role]
    export_dir = str(exported.export_dir)
    manifest = {
        "run_id": run_id,
        "dataset": "taxi",
        "run_dir": str(run_dir),
        "stages": {
            "train": {"status": "succeeded", "metrics": trained.metrics},
            "baselines": {"status": "succeeded", "metrics": {}},  # none trained
            "export": {
                "status": "succeeded",
                "export_dir": export_dir,
                "artifacts": {
                    "export": {"path": export_dir, "sha256": storage.tree_digest(export_dir)}
                },
            },
        },
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    return run_dir


@pytest.fixture(scope="session")
def gated_run(slice_models, tmp_path_factory):
    """The served model pushed to a model base, then a run of the candidate through the
    evaluate and push stages (in this process, as ``pipeline.run`` calls them)."""
    from pipeline.manifest import RunRecorder
    from pipeline.push import BlessingRule, push
    from pipeline.stages import STAGES, RunContext

    root = tmp_path_factory.mktemp("gated")
    base = root / "models" / "taxi"
    trained, exported = slice_models["served"]
    served = push(exported.export_dir, base, trained.metrics["eval"]["auc"], BlessingRule("auc"))
    assert served.blessed and served.version == 1
    run_dir = prepared_run(root / "runs" / "gated", slice_models, "candidate", "gated")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    recorder = RunRecorder(str(run_dir), manifest)
    ctx = RunContext(
        dataset=get_dataset("taxi"),
        run_dir=str(run_dir),
        manifest=recorder.manifest,
        beam_args=[],
        push_base=str(base),
    )
    for name in ("evaluate", "push"):
        with recorder.stage(name) as record:
            STAGES[name](ctx, record)
    return {"root": root, "base": base, "run_dir": run_dir, "manifest": recorder.manifest}
