"""Shared fixtures: small typed split files and one real transform run reused by several tests."""

from __future__ import annotations

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
    """A briefly trained model and its serving export."""
    from pipeline.export import export_serving_model
    from pipeline.train import TrainConfig, train_and_evaluate

    root = tmp_path_factory.mktemp("model")
    trained = train_and_evaluate(
        taxi,
        transform_output.output_dir,
        transform_output.example_patterns,
        root / "model",
        TrainConfig(train_steps=100, steps_per_epoch=50),
    )
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
