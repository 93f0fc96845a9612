"""The portable runner as a deployment mode: a job server and an SDK worker pool on loopback.

``PortableRunner`` is Beam's client for the portability framework (the Job API plus the Fn
API) that Dataflow Runner v2, Flink and Spark run pipelines with. :class:`PortableCluster`
starts the two services such a deployment needs, both as child processes of the submitting one:

* a job service (:mod:`pipeline.runners.job_server`, Beam's local job service), which runs each
  job's Fn API runner, with ``--sdk_worker_parallelism`` workers per job;
* an SDK worker pool (:mod:`pipeline.runners.worker_pool`) serving the ``EXTERNAL``
  environment with the pipeline environment's own interpreter.

and gives the Beam flags that point jobs at them (:meth:`PortableCluster.beam_args`). Every Beam
stage runs its job through :func:`pipeline.runners.run_pipeline`, which applies the checks below
when the job went to a cluster of this process.

What counts as success. A job succeeds when (1) its final state is DONE, (2) the job server is
still running after it, and (3) every SDK worker started for it ended with status 0 (a worker
ends when the runner closes its control stream, after DoFn teardown). Only then do stages
publish what the job wrote. A job whose state is DONE but whose job server or a worker then died
abnormally (a signal, an abort, a non-zero status) raised :class:`RunnerAborted`: its outputs
were written, yet a process of the run did not end cleanly, so they are not published and the
run stops with its own exit status (``pipeline.run``: 4), neither taken for a success nor for a
crash that a scheduler would retry blindly. A job that fails before DONE is a plain failure
(nothing is published; a retry may help); a worker pool whose Python cannot host the DoFns
fails before any job starts (:class:`pipeline.runners.worker_pool.WorkerEnvironmentError`).
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from pathlib import Path

from pipeline.runners.job_server import DEFAULT_CONNECT_TIMEOUT
from pipeline.runners.job_server import READY_PREFIX as JOB_SERVER_READY
from pipeline.runners.processes import (
    ServerStartError,
    describe_exit,
    log_tail,
    start_server,
    stop_server,
)
from pipeline.runners.worker_pool import SdkWorkerPool, WorkerEnvironmentError, pool_environment

log = logging.getLogger(__name__)
DEFAULT_WORKERS = 2
# A worker ends right after its job's control stream closes and its DoFns are torn down.
WORKER_EXIT_TIMEOUT = 60.0
# What the SDK workers import before a job needs them: TensorFlow, TFT and TFDV take seconds.
WORKER_PRELOAD = ("pipeline.transform", "pipeline.validation.stats")
_CLUSTERS: dict[str, PortableCluster] = {}


class RunnerAborted(RuntimeError):
    """A job finished (state DONE, outputs written) but a runner process then died abnormally."""


class PortableCluster:
    """A job server and an SDK worker pool for ``PortableRunner`` + ``EXTERNAL`` workers.

    ``python`` is the pipeline environment's interpreter for the workers (default: this
    process's). The pool keeps ``spare_workers`` (default: ``workers``) worker processes started
    and preloaded for the next job. Use as a context manager; :meth:`stop` ends both services
    and their workers.
    """

    def __init__(
        self,
        workers: int = DEFAULT_WORKERS,
        python: str | Path = sys.executable,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        start_timeout: float = 60.0,
        spare_workers: int | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"a portable cluster needs at least one SDK worker, got {workers}")
        self.workers = workers
        self.connect_timeout = connect_timeout
        self.start_timeout = start_timeout
        self.state_dir = Path(tempfile.mkdtemp(prefix="beam-portable-"))
        self.pool = SdkWorkerPool(
            python,
            self.state_dir / "pool",
            start_timeout,
            WORKER_PRELOAD,
            spares=workers if spare_workers is None else spare_workers,
        )
        self.job_endpoint = ""
        self._job_server = None

    @property
    def job_server_log(self) -> Path:
        return self.state_dir / "job_server.log"

    def start(self) -> PortableCluster:
        """Start the pool (probing its Python first), then the job server; register them."""
        try:
            self.pool.start()
            self._start_job_server()
        except BaseException:
            self.stop()
            raise
        _CLUSTERS[self.job_endpoint] = self
        log.info(
            "portable cluster: job server %s, SDK worker pool %s (%d workers per job, python %s)",
            self.job_endpoint, self.pool.address, self.workers, self.pool.worker_python,
        )  # fmt: skip
        return self

    def _start_job_server(self) -> None:
        command = [
            self.pool.worker_python, "-m", "pipeline.runners.job_server",
            "--workers", str(self.workers),
            "--worker-connect-timeout", str(self.connect_timeout),
        ]  # fmt: skip
        env = pool_environment(self.pool.python)
        try:
            self._job_server, self.job_endpoint = start_server(
                command, env, JOB_SERVER_READY, self.start_timeout, self.job_server_log
            )
        except ServerStartError as error:
            raise WorkerEnvironmentError(f"the Beam job server did not start: {error}") from None

    def beam_args(self) -> list[str]:
        """Beam flags that send a job to this cluster."""
        return [
            "--runner=PortableRunner",
            f"--job_endpoint={self.job_endpoint}",
            "--environment_type=EXTERNAL",
            f"--environment_config={self.pool.address}",
            f"--sdk_worker_parallelism={self.workers}",
        ]

    # ---- around each job --------------------------------------------------------------------

    def worker_ids(self) -> set[str]:
        return set(self.pool.workers())

    def check_after_job(self, job: str, workers_before: set[str]) -> None:
        """Raise :class:`RunnerAborted` unless every process of a DONE job ended cleanly."""
        problems = []
        if self._job_server is None or self._job_server.poll() is not None:
            status = None if self._job_server is None else self._job_server.returncode
            problems.append(f"the job server {describe_exit(status)} (log: {self.job_server_log})")
        started = set(self.pool.workers()) - workers_before
        statuses = self.pool.wait_for_exit(started, WORKER_EXIT_TIMEOUT)
        for status in sorted(statuses.values(), key=lambda s: s.worker_id):
            if not status.clean:
                when = f" {WORKER_EXIT_TIMEOUT:.0f} s after its job" if status.running else ""
                problems.append(f"{status.describe()}{when} (log: {status.log})")
        if problems:
            raise RunnerAborted(
                f"Beam job {job} finished with state DONE and wrote its outputs, but then "
                + "; ".join(problems)
                + ". The outputs are not published: a run whose processes do not end cleanly "
                "cannot vouch for them. Look at the log, then rerun the stage."
            )

    def explain_failure(self, job: str, workers_before: set[str]) -> str | None:
        """What the cluster knows about a failed job: workers that died, a dead job server."""
        notes = []
        if self._job_server is not None and self._job_server.poll() is not None:
            notes.append(f"the job server {describe_exit(self._job_server.returncode)}")
        started = set(self.pool.workers()) - workers_before
        for status in self.pool.workers().values():
            if status.worker_id in started and not status.running and not status.clean:
                notes.append(f"{status.describe()}: {log_tail(status.log)}")
        return f"Beam job {job}: " + "; ".join(notes) if notes else None

    # ---- shutdown ---------------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Stop the job server and the pool; return what did not exit cleanly (also logged)."""
        _CLUSTERS.pop(self.job_endpoint, None)
        problems = []
        if self._job_server is not None:
            status = stop_server(self._job_server)
            self._job_server = None
            if status != 0:
                problems.append(f"the job server {describe_exit(status)} on shutdown")
        status = self.pool.stop()
        if status not in (0, None):
            problems.append(f"the SDK worker pool {describe_exit(status)} on shutdown")
        for problem in problems:
            log.warning("portable cluster: %s (logs in %s)", problem, self.state_dir)
        if not problems:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        return problems

    def __enter__(self) -> PortableCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cluster_for(job_endpoint: str | None) -> PortableCluster | None:
    """The running cluster of this process whose job server is at ``job_endpoint``, if any."""
    return _CLUSTERS.get(job_endpoint or "")
