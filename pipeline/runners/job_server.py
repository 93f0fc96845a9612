"""A local Beam job service in a process of its own: the Job API a Flink or Spark job server speaks.

``PortableRunner`` submits a job's portable pipeline to a job service (``--job_endpoint``), which
runs it and starts SDK workers in the job's environment. Beam's ``--job_endpoint=embed`` runs
that service, and with it the job's runner (the Fn API runner's gRPC servers and threads), inside
the submitting process; this module runs Beam's ``LocalJobServicer`` as a separate process
instead, so that:

* an abort of the runner at exit cannot take the stage's process with it: the stage submits,
  watches the job's state and checks this process's exit status (see
  :mod:`pipeline.runners.portable`);
* the job honours ``--sdk_worker_parallelism`` (the number of SDK worker processes, which the
  Flink and Spark job servers read): Beam's Python job service starts one worker per
  environment whatever that option says; here each job's Fn API runner starts that many, and its
  parallel bundle manager spreads every stage's input over them;
* a worker that never connects fails the job within ``--worker-connect-timeout`` seconds with a
  message that says what to check, instead of the runner waiting forever for it.

Both changes reach into the Fn API runner's internals (``FnApiRunner._num_workers``, the control
connection's state, the EXTERNAL worker handler's registration); they are pinned by the
apache-beam version and checked by ``tests/test_portable_runner.py``.

    python -m pipeline.runners.job_server [--port 0] [--workers 2] [--worker-connect-timeout 60]
"""

from __future__ import annotations

import argparse
import signal
import threading
import time

READY_PREFIX = "JOB_SERVER_READY "
DEFAULT_CONNECT_TIMEOUT = 60.0


class WorkerConnectTimeout(RuntimeError):
    """An SDK worker the pool started never connected to the runner."""


def sdk_worker_parallelism(options, default: int) -> int:
    """The job's ``--sdk_worker_parallelism`` (Beam's default is 1; 0 means ``default``)."""
    from apache_beam.options.pipeline_options import PortableOptions

    value = options.view_as(PortableOptions).sdk_worker_parallelism
    try:
        workers = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"--sdk_worker_parallelism must be an integer, got {value!r}") from None
    return workers if workers > 0 else default


def _parallel_job_type(default_workers: int) -> type:
    """Beam's local job, running its Fn API runner with the job's worker parallelism."""
    from apache_beam.portability.api import beam_job_api_pb2
    from apache_beam.runners.portability import local_job_service
    from apache_beam.runners.portability.fn_api_runner import fn_runner

    class ParallelBeamJob(local_job_service.BeamJob):
        def _invoke_runner(self):
            self.set_state(beam_job_api_pb2.JobState.RUNNING)
            options = self.pipeline_options()
            runner = fn_runner.FnApiRunner(provision_info=self._provision_info)
            # FnApiRunner reads its worker count from DirectOptions only in run_pipeline(), which
            # a job service never calls: set it the way run_pipeline() does.
            runner._num_workers = sdk_worker_parallelism(options, default_workers)
            return runner.run_via_runner_api(self._pipeline_proto, options)

    return ParallelBeamJob


def _register_connect_deadline(timeout: float) -> None:
    """Make EXTERNAL workers that do not connect within ``timeout`` fail the job, naming why."""
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    started = worker_handlers.BeamFnControlServicer.STARTED_STATE

    class DeadlineExternalWorkerHandler(worker_handlers.ExternalWorkerHandler):
        def start_worker(self) -> None:
            super().start_worker()
            deadline = time.monotonic() + timeout
            while self.control_conn._state != started:
                if time.monotonic() > deadline:
                    pool = self._external_payload.endpoint.url
                    raise WorkerConnectTimeout(
                        f"SDK worker {self.worker_id}, started by the worker pool at {pool}, did "
                        f"not connect to the runner at {self.control_address} within "
                        f"{timeout:.0f} s. Check that the pool's `python` imports apache_beam "
                        "and this project (its worker log is in the pool's status directory), "
                        f"and that {self.control_address} is reachable from the pool's host."
                    )
                time.sleep(0.02)

    register = worker_handlers.WorkerHandler.register_environment(
        common_urns.environments.EXTERNAL.urn, beam_runner_api_pb2.ExternalPayload
    )
    register(DeadlineExternalWorkerHandler)


def serve(
    port: int = 0, workers: int = 2, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
) -> None:
    """Serve the Job API on loopback until SIGTERM/SIGINT; print the address once listening."""
    from apache_beam.runners.portability import local_job_service

    _register_connect_deadline(connect_timeout)
    servicer = local_job_service.LocalJobServicer(beam_job_type=_parallel_job_type(workers))
    bound = servicer.start_grpc_server(port)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    print(f"{READY_PREFIX}localhost:{bound}", flush=True)
    stopping.wait()
    servicer.stop(timeout=2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve Beam's Job API on loopback.")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="SDK workers per job whose --sdk_worker_parallelism is 0 (the runner's choice)",
    )
    parser.add_argument(
        "--worker-connect-timeout",
        type=float,
        default=DEFAULT_CONNECT_TIMEOUT,
        help="seconds a started SDK worker may take to connect before the job fails",
    )
    args = parser.parse_args(argv)
    serve(args.port, args.workers, args.worker_connect_timeout)


if __name__ == "__main__":
    main()
