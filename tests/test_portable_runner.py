"""The portable runner: PortableRunner + a local job server + a pool of EXTERNAL SDK workers.

Real processes throughout: the job server and the worker pool run as children, the SDK workers
as the pool's children, and the stages' jobs are the real TFDV and TFT jobs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

from pipeline.run import EXIT_RUNNER_ABORTED, EXIT_VERDICT
from pipeline.runners import (
    BeamJobFailed,
    PortableCluster,
    RunnerAborted,
    pipeline_options,
    run_pipeline,
)
from pipeline.runners.worker_pool import SdkWorkerPool, WorkerEnvironmentError
from pipeline.transform import run_transform
from pipeline.validation.stats import compute_statistics
from tests.conftest import PYTHON, REPO_ROOT, subprocess_env
from tests.portable_dofns import AbortInTeardown, WaitForAnotherWorker

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(portable_cluster):
    return portable_cluster


def _files(root: str | Path) -> dict[str, bytes]:
    """Every file below ``root`` by relative path."""
    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _sorted_features(stats):
    """Statistics with each dataset's features in path order (TFDV emits them in any order)."""
    canonical = type(stats)()
    canonical.CopyFrom(stats)
    for dataset in canonical.datasets:
        features = sorted(dataset.features, key=lambda f: tuple(f.path.step))
        del dataset.features[:]
        dataset.features.extend(features)
    return canonical


def _fake_python(directory: Path, body: str) -> Path:
    """An executable named ``python`` in ``directory`` running the shell ``body``."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "python"
    script.write_text(f"#!/bin/sh\nREAL={sys.executable}\n{body}\n")
    script.chmod(0o755)
    return script


# ---- same outputs as the DirectRunner ---------------------------------------------------------


def test_transform_on_two_portable_workers_writes_the_direct_runners_bytes(
    cluster, taxi, small_splits, transform_output, tmp_path
):
    before = cluster.worker_ids()
    portable = run_transform(taxi, small_splits, tmp_path / "portable", cluster.beam_args())
    started = cluster.worker_ids() - before
    assert portable.rows == transform_output.rows
    direct, ours = _files(transform_output.output_dir), _files(portable.output_dir)
    assert ours.keys() == direct.keys()
    assert any(name.startswith("examples/") for name in ours)
    for name in ("examples", "transform_fn/assets", "transformed_metadata"):
        for path in (p for p in direct if p.startswith(name)):
            assert ours[path] == direct[path], path
    # Each of the transform's two Beam jobs (analyze, transform) ran on two SDK workers.
    assert len(started) == 4


def test_validation_statistics_on_portable_workers_equal_the_direct_runners(
    cluster, small_splits, tmp_path
):
    for split in ("train", "eval"):  # eval's statistics are what drift is computed from
        pattern = f"{small_splits[split]}/*.parquet"
        direct = compute_statistics(
            pattern, tmp_path / f"direct-{split}.pb", ["--runner=DirectRunner"]
        )
        portable = compute_statistics(
            pattern, tmp_path / f"portable-{split}.pb", cluster.beam_args()
        )
        assert _sorted_features(portable) == _sorted_features(direct), split
        assert portable.datasets[0].num_examples == direct.datasets[0].num_examples > 0


def test_two_sdk_workers_process_elements_at_the_same_time(cluster, tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    pipeline = beam.Pipeline(options=PipelineOptions(cluster.beam_args()))
    _ = (
        pipeline
        | beam.Create([1, 2], reshuffle=True)
        | beam.ParDo(WaitForAnotherWorker(str(pids)))
        | beam.io.WriteToText(str(tmp_path / "out"))
    )
    run_pipeline(pipeline, "two workers")
    written = {int(line) for f in tmp_path.glob("out*") for line in f.read_text().split()}
    assert len(written) == 2
    assert written == {int(p.stem) for p in pids.iterdir()}
    assert os.getpid() not in written


# ---- a misconfigured pool fails fast ----------------------------------------------------------


def test_a_pool_whose_python_lacks_apache_beam_is_refused_before_any_job(tmp_path):
    # A real interpreter without site-packages: no apache_beam, like a system python on PATH.
    fake = _fake_python(tmp_path / "bin", 'exec "$REAL" -I -S "$@"')
    with pytest.raises(WorkerEnvironmentError) as refused:
        SdkWorkerPool(python=fake, state_dir=tmp_path / "pool").start()
    message = str(refused.value)
    assert str(fake) in message
    assert "No module named 'apache_beam'" in message
    assert not (tmp_path / "pool" / "worker_pool.log").exists()  # nothing was started


def test_the_managed_pool_ignores_a_broken_python_first_on_the_callers_path(tmp_path, monkeypatch):
    # Beam's stock pool starts workers with the first `python` on PATH; this one with its own.
    fake_dir = tmp_path / "bin"
    _fake_python(fake_dir, 'echo "not a python" >&2; exit 1')
    monkeypatch.setenv("PATH", f"{fake_dir}{os.pathsep}{os.environ['PATH']}")
    with SdkWorkerPool(state_dir=tmp_path / "pool") as pool:
        assert Path(pool.worker_python).parent == Path(sys.executable).parent
        pool.health_check()


def test_a_run_with_a_pool_python_lacking_apache_beam_stops_at_once_with_the_reason(tmp_path):
    fake = _fake_python(tmp_path / "bin", 'exec "$REAL" -I -S "$@"')
    completed = _pipeline_run(
        tmp_path / "runs", "--stages", "validation", "--beam-worker-python", str(fake)
    )
    assert completed.returncode == EXIT_VERDICT, completed.stderr[-3000:]
    assert "WorkerEnvironmentError" in completed.stderr
    assert "No module named 'apache_beam'" in completed.stderr
    manifest = json.loads((tmp_path / "runs" / "run" / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert "cannot import apache_beam" in manifest["error"]


def test_a_worker_that_never_connects_fails_the_job_within_the_deadline(tmp_path):
    # Passes the import probe, but its SDK workers never reach the runner.
    fake = _fake_python(
        tmp_path / "bin",
        'case "$*" in *SdkHarness*) exec sleep 600;; *) exec "$REAL" "$@";; esac',
    )
    with PortableCluster(workers=1, python=fake, connect_timeout=3) as slow:
        pipeline = beam.Pipeline(options=PipelineOptions(slow.beam_args()))
        _ = (
            pipeline
            | beam.Create([1, 2, 3])
            | beam.Map(str)
            | beam.io.WriteToText(str(tmp_path / "o"))
        )
        with pytest.raises(BeamJobFailed, match=r"did not connect to the runner .* within 3 s"):
            run_pipeline(pipeline, "never connects")
    assert not list(tmp_path.glob("o-*"))


# ---- an abort after the outputs are written ---------------------------------------------------


def test_a_worker_aborting_after_the_job_is_reported_not_taken_for_success(cluster, tmp_path):
    out = tmp_path / "out"
    pipeline = beam.Pipeline(options=PipelineOptions(cluster.beam_args()))
    _ = (
        pipeline
        | beam.Create(list(range(10)))
        | beam.ParDo(AbortInTeardown())
        | beam.Map(str)
        | beam.io.WriteToText(str(out))
    )
    with pytest.raises(RunnerAborted) as aborted:
        run_pipeline(pipeline, "abort in teardown")
    message = str(aborted.value)
    assert "finished with state DONE" in message
    assert "exited with status 134 (128 + SIGABRT)" in message
    assert "not published" in message
    written = sorted(line for f in tmp_path.glob("out-*") for line in f.read_text().split())
    assert written == sorted(str(i) for i in range(10))  # the job had written its outputs


def test_a_run_whose_worker_aborts_at_exit_stops_with_its_own_status_and_publishes_nothing(
    small_splits, tmp_path
):
    # Each SDK worker does all its work, then its process exits 134, as an abort at exit does.
    fake = _fake_python(
        tmp_path / "bin",
        'case "$*" in *SdkHarness*) "$REAL" "$@"; exit 134;; *) exec "$REAL" "$@";; esac',
    )
    runs = tmp_path / "runs"
    shutil.copytree(small_splits["train"].parent, runs / "run" / "splits")
    completed = _pipeline_run(runs, "--stages", "validation", "--beam-worker-python", str(fake))
    assert completed.returncode == EXIT_RUNNER_ABORTED, completed.stderr[-3000:]
    assert "RunnerAborted" in completed.stderr
    assert "exited with status 134" in completed.stderr
    manifest = json.loads((runs / "run" / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["stages"]["validation"]["status"] == "failed"
    assert not list((runs / "run" / "statistics").glob("*.pb"))


def _pipeline_run(runs_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            PYTHON, "-m", "pipeline.run", "--beam-runner", "portable",
            "--runs-dir", str(runs_dir), "--run-id", "run", *extra,
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=subprocess_env(),
        timeout=300,  # a hang fails here instead of holding CI
    )  # fmt: skip


def test_portable_runner_flags_the_run_sets_itself_are_refused(tmp_path):
    completed = _pipeline_run(tmp_path, "--runner", "DirectRunner")
    assert completed.returncode == 2
    assert "--beam-runner portable sets" in completed.stderr


# ---- the stages' pipeline options -------------------------------------------------------------


@pytest.mark.parametrize(
    ("beam_args", "pickler"),
    [
        ([], "cloudpickle"),
        (None, "cloudpickle"),
        (["--runner=DirectRunner"], "cloudpickle"),
        (["--pickle_library=dill"], "dill"),
        (["--pickle_library", "default"], "default"),
    ],
)
def test_stage_pipelines_use_cloudpickle_unless_the_flags_name_a_pickler(beam_args, pickler):
    options = pipeline_options(beam_args)
    assert options.view_as(SetupOptions).pickle_library == pickler
    runner = "DirectRunner" if "--runner=DirectRunner" in (beam_args or []) else None
    assert options.get_all_options()["runner"] == runner  # the other flags pass through


def test_a_cloudpickled_closure_runs_on_portable_workers(cluster, tmp_path):
    offset = 7  # a closure over a local: pickled by value, unpickled by the SDK workers
    options = pipeline_options(cluster.beam_args())
    output = tmp_path / "out"
    with beam.Pipeline(options=options) as p:
        _ = (
            p
            | beam.Create([1, 2, 3])
            | beam.Map(lambda x: x + offset)
            | beam.io.WriteToText(str(output), shard_name_template="")
        )
    assert sorted(int(line) for line in output.read_text().split()) == [8, 9, 10]
