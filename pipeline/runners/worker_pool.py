"""A project-managed pool of Beam SDK workers (the ``EXTERNAL`` environment of portable runners).

A portable runner does not run user code itself: for ``--environment_type=EXTERNAL`` it asks a
worker pool (``--environment_config=HOST:PORT``, the Fn API's ``BeamFnExternalWorkerPool``
service) to start SDK worker processes, which then connect back to the runner. Beam ships such a
pool, ``apache_beam.runners.worker.worker_pool_main``; this module serves the same service with
Beam's own servicer class and fixes what makes the stock one unsafe to leave unattended:

* it starts workers with the first ``python`` on its PATH, and one without apache_beam makes a
  job hang silently. :class:`SdkWorkerPool` puts the pipeline environment's own interpreter
  first on PATH (and this project on PYTHONPATH) and, before anything starts, runs exactly the
  ``python`` the workers will run to check that it imports apache_beam (the same version as the
  submitting process) and this package;
* it binds every interface; this pool binds loopback only, on a port the OS picks, and says
  which once it is listening;
* it pipes each worker's stdout without ever reading it and never reaps its workers, so a
  worker that aborts after its job is invisible. Here each worker's output goes to a log file and
  its exit status to a status file beside it (``<status_dir>/<worker id>.json``), which the
  submitting process reads after every job (:mod:`pipeline.runners.portable`);
* it starts a worker only when a job asks for one, so every job waits for interpreters to start
  and import TensorFlow. This pool keeps ``--spares`` worker processes started, with the
  ``--preload`` modules imported, and hands them out in order (a job's worker is still a fresh
  process: nothing carries over from one job to the next).

The pool itself runs as ``python -m pipeline.runners.worker_pool --status-dir DIR`` (started by
:meth:`SdkWorkerPool.start`, stopped by :meth:`SdkWorkerPool.stop`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pipeline.runners.processes import (
    ServerStartError,
    describe_exit,
    log_tail,
    start_server,
    stop_server,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
READY_PREFIX = "WORKER_POOL_READY "
# What every SDK worker process runs: import the modules the pipeline's DoFns need (argv), then
# wait for the pool to hand it a job's control endpoint and worker id (stdin), and serve that job.
# Starting it before a job needs it takes the interpreter start and the TensorFlow import (seconds
# per worker) off the job's critical path.
_WORKER_PROGRAM = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
from apache_beam.runners.worker.sdk_worker import SdkHarness
assignment = sys.stdin.readline().split()
if assignment:
    control, worker_id = assignment
    SdkHarness(control, worker_id=worker_id, state_cache_size=0,
               data_buffer_time_limit_ms=-1).run()
"""
_PROBE = (
    "import sys, apache_beam, pipeline; "
    "print(apache_beam.__version__); print(sys.executable); print(pipeline.__file__)"
)


class WorkerEnvironmentError(RuntimeError):
    """The SDK worker pool cannot start usable workers; the message says what to check."""


# ---- the pool process ------------------------------------------------------------------------


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(payload, sort_keys=True))
    os.replace(temporary, path)


class _WarmProcesses:
    """Worker processes started ahead of demand: ``spares`` of them wait, already imported."""

    def __init__(self, python: str, directory: Path, preload: list[str], spares: int) -> None:
        self._command = [python, "-c", _WORKER_PROGRAM, *preload]
        self._directory = directory
        self._spares = spares
        self._lock = threading.Lock()
        self._waiting: list[tuple[subprocess.Popen, Path]] = []
        self._count = 0
        with self._lock:
            for _ in range(spares):
                self._waiting.append(self._spawn())

    def _spawn(self) -> tuple[subprocess.Popen, Path]:
        self._count += 1
        log_path = self._directory / f"process-{self._count}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                self._command, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                close_fds=True,
            )  # fmt: skip
        return process, log_path

    def take(self) -> tuple[subprocess.Popen, Path]:
        """The oldest waiting process (a new one if none waits); a replacement starts."""
        with self._lock:
            taken = self._waiting.pop(0) if self._waiting else self._spawn()
            while len(self._waiting) < self._spares:
                self._waiting.append(self._spawn())
        return taken

    def close(self) -> None:
        with self._lock:
            waiting, self._waiting = self._waiting, []
        for process, _ in waiting:
            process.terminate()
            process.wait()


def _make_servicer(status_dir: Path, processes: _WarmProcesses):
    """Beam's pool servicer, handing out warm workers and recording how each one ends."""
    from apache_beam.portability.api import beam_fn_api_pb2
    from apache_beam.runners.worker import worker_pool_main

    class RecordingWorkerPool(worker_pool_main.BeamFnExternalWorkerPoolServicer):
        def __init__(self) -> None:
            super().__init__(use_process=True)
            self._lock = threading.Lock()
            self._records: dict[str, dict[str, Any]] = {}

        def StartWorker(self, request, context=None):
            worker_id = request.worker_id
            process, log_path = processes.take()
            try:
                if process.poll() is not None:
                    raise BrokenPipeError
                process.stdin.write(f"{request.control_endpoint.url} {worker_id}\n".encode())
                process.stdin.close()
            except (BrokenPipeError, OSError):
                process.wait()
                return beam_fn_api_pb2.StartWorkerResponse(
                    error=f"the SDK worker process {describe_exit(process.returncode)} before it "
                    f"got its job: {log_tail(log_path)}"
                )
            record = {
                "worker_id": worker_id,
                "pid": process.pid,
                "log": str(log_path),
                "started_at": time.time(),
                "returncode": None,
                "stop_requested": False,
            }
            with self._lock:
                self._worker_processes[worker_id] = process
                self._records[worker_id] = record
                _write_json_atomic(status_dir / f"{worker_id}.json", record)
            threading.Thread(target=self._reap, args=(worker_id, process), daemon=True).start()
            return beam_fn_api_pb2.StartWorkerResponse()

        def StopWorker(self, request, context=None):
            with self._lock:
                record = self._records.get(request.worker_id)
                if record is not None and record["returncode"] is None:
                    record["stop_requested"] = True
                    _write_json_atomic(status_dir / f"{request.worker_id}.json", record)
            return super().StopWorker(request, context)

        def _reap(self, worker_id: str, process: subprocess.Popen) -> None:
            returncode = process.wait()
            with self._lock:
                record = self._records[worker_id]
                record.update(returncode=returncode, ended_at=time.time())
                _write_json_atomic(status_dir / f"{worker_id}.json", record)

        def stop_all(self) -> None:
            with self._lock:
                running = [w for w, r in self._records.items() if r["returncode"] is None]
            for worker_id in running:
                self.StopWorker(beam_fn_api_pb2.StopWorkerRequest(worker_id=worker_id))

    return RecordingWorkerPool()


def serve(
    status_dir: Path, preload: list[str], spares: int, host: str = "127.0.0.1", port: int = 0
) -> None:
    """Serve the pool until SIGTERM/SIGINT; print the address once listening."""
    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2_grpc
    from apache_beam.utils import thread_pool_executor

    python = shutil.which("python")
    if python is None:
        raise SystemExit("no `python` on PATH for the SDK workers")
    processes = _WarmProcesses(python, status_dir, preload, spares)
    servicer = _make_servicer(status_dir, processes)
    server = grpc.server(
        thread_pool_executor.shared_unbounded_instance(),
        options=[("grpc.http2.max_pings_without_data", 0), ("grpc.http2.max_ping_strikes", 0)],
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise SystemExit(f"cannot bind the worker pool to {host}:{port}")
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(servicer, server)
    server.start()
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    print(f"{READY_PREFIX}{host}:{bound} python={python}", flush=True)
    stopping.wait()
    server.stop(grace=2).wait()
    processes.close()
    servicer.stop_all()


# ---- the submitting side -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WorkerStatus:
    """How one SDK worker process of the pool is doing, or how it ended."""

    worker_id: str
    pid: int
    log: str
    returncode: int | None  # None while it runs; negative: killed by that signal
    stop_requested: bool

    @property
    def running(self) -> bool:
        return self.returncode is None

    @property
    def clean(self) -> bool:
        """Ended with status 0, or ended after the pool was asked to stop it."""
        return self.returncode == 0 or (self.stop_requested and self.returncode is not None)

    def describe(self) -> str:
        return f"SDK worker {self.worker_id} (pid {self.pid}) {describe_exit(self.returncode)}"


def pool_environment(python: str | Path) -> dict[str, str]:
    """The pool's environment: ``python``'s directory first on PATH, this project on PYTHONPATH.

    Every worker inherits it, so ``python`` on the workers' PATH is the pipeline environment's
    interpreter and the DoFns' modules (``pipeline``, ``transforms``) import there.
    """
    env = dict(os.environ)
    env["PATH"] = _prepend(str(Path(python).parent), env.get("PATH", ""))
    env["PYTHONPATH"] = _prepend(str(PROJECT_ROOT), env.get("PYTHONPATH", ""))
    env.setdefault("TF_USE_LEGACY_KERAS", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _prepend(entry: str, search_path: str) -> str:
    rest = [p for p in search_path.split(os.pathsep) if p and p != entry]
    return os.pathsep.join([entry, *rest])


def probe_worker_python(env: dict[str, str], timeout: float = 120.0) -> str:
    """Run the ``python`` the workers will run; raise unless it can host this project's DoFns.

    Returns that interpreter's path. Checks: it exists on the pool's PATH, imports apache_beam of
    the same version as this process (a job built by one SDK version and run by another fails in
    obscure ways) and imports this package.
    """
    import apache_beam

    python = shutil.which("python", path=env["PATH"])
    if python is None:
        raise WorkerEnvironmentError(
            f"no `python` on the worker pool's PATH ({env['PATH']}): the pool starts its SDK "
            "workers with it"
        )
    try:
        done = subprocess.run(
            [python, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise WorkerEnvironmentError(
            f"{python} did not finish `import apache_beam, pipeline` within {timeout:.0f} s"
        ) from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise WorkerEnvironmentError(
            f"the SDK workers' python {python} (first `python` on the worker pool's PATH) cannot "
            f"import apache_beam and this project: {last}. Start the pool with the pipeline "
            f"environment's interpreter ({sys.executable}) or install the pipeline there."
        )
    version = done.stdout.split()[0]
    if version != apache_beam.__version__:
        raise WorkerEnvironmentError(
            f"the SDK workers' python {python} has apache_beam {version}, this process "
            f"{apache_beam.__version__}: the workers must run the SDK that built the job"
        )
    return python


class SdkWorkerPool:
    """Start, health-check, watch and stop a :func:`serve` pool process.

    ``python`` is the interpreter of the pipeline environment (default: this process's); its
    directory goes first on the pool's PATH, so that is the ``python`` the workers run. The pool
    keeps ``spares`` worker processes started, each having imported ``preload``.
    """

    def __init__(
        self,
        python: str | Path = sys.executable,
        state_dir: Path | None = None,
        start_timeout: float = 60.0,
        preload: tuple[str, ...] = (),
        spares: int = 2,
    ) -> None:
        self.python = str(python)
        self.preload = preload
        self.spares = spares
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="sdk-worker-pool-"))
        self.status_dir = self.state_dir / "workers"
        self.start_timeout = start_timeout
        self.address = ""
        self.worker_python = ""
        self._process: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.state_dir / "worker_pool.log"

    def start(self) -> SdkWorkerPool:
        """Probe the workers' python, start the pool, wait until it answers a real RPC."""
        env = pool_environment(self.python)
        self.worker_python = probe_worker_python(env)
        self.status_dir.mkdir(parents=True, exist_ok=True)
        command = [
            self.worker_python, "-m", "pipeline.runners.worker_pool",
            "--status-dir", str(self.status_dir), "--spares", str(self.spares),
            *(f"--preload={module}" for module in self.preload),
        ]  # fmt: skip
        try:
            self._process, self.address = start_server(
                command, env, READY_PREFIX, self.start_timeout, self.log_path
            )
        except ServerStartError as error:
            raise WorkerEnvironmentError(f"the SDK worker pool did not start: {error}") from None
        try:
            self.health_check(timeout=self.start_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def health_check(self, timeout: float = 10.0) -> None:
        """One real round trip to the pool's gRPC service (a StopWorker for no worker)."""
        import grpc
        from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc

        if not self.alive():
            raise WorkerEnvironmentError(f"the worker pool is not running; see {self.log_path}")
        with grpc.insecure_channel(self.address) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=timeout)
                stub = beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(channel)
                request = beam_fn_api_pb2.StopWorkerRequest(worker_id="health-check")
                stub.StopWorker(request, timeout=timeout)
            except (grpc.FutureTimeoutError, grpc.RpcError) as error:
                raise WorkerEnvironmentError(
                    f"the worker pool at {self.address} did not answer within {timeout:.0f} s "
                    f"({type(error).__name__}); see {self.log_path}"
                ) from None

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def workers(self) -> dict[str, WorkerStatus]:
        """Every worker the pool has started, by worker id, as its status files say now."""
        statuses = {}
        for path in self.status_dir.glob("*.json"):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # replaced right now (atomic rename): the next read sees it
            statuses[record["worker_id"]] = WorkerStatus(
                record["worker_id"], record["pid"], record["log"], record["returncode"],
                record["stop_requested"],
            )  # fmt: skip
        return statuses

    def wait_for_exit(self, worker_ids: set[str], timeout: float) -> dict[str, WorkerStatus]:
        """Statuses of ``worker_ids`` once all have ended, or when ``timeout`` runs out."""
        deadline = time.monotonic() + timeout
        while True:
            statuses = {w: s for w, s in self.workers().items() if w in worker_ids}
            if all(not s.running for s in statuses.values()) or time.monotonic() > deadline:
                return statuses
            time.sleep(0.05)

    def stop(self) -> int | None:
        """Stop the pool (it stops its workers); returns the pool's exit status."""
        process, self._process = self._process, None
        return None if process is None else stop_server(process)

    def __enter__(self) -> SdkWorkerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a pool of Beam SDK workers on loopback.")
    parser.add_argument("--status-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument(
        "--preload",
        action="append",
        default=[],
        metavar="MODULE",
        help="module every worker process imports before it is needed (repeat)",
    )
    parser.add_argument(
        "--spares", type=int, default=2, help="worker processes kept started and waiting"
    )
    args = parser.parse_args(argv)
    serve(args.status_dir, args.preload, args.spares, port=args.port)


if __name__ == "__main__":
    main()
