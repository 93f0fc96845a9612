"""DoFns the portable-runner tests send to SDK worker processes.

They live in a module of their own, imported as ``tests.portable_dofns``, so that the workers
(whose PYTHONPATH holds the repository root) can import them when they unpickle a job.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import apache_beam as beam


class AbortInTeardown(beam.DoFn):
    """Passes elements through, then kills its worker with status 134 when torn down.

    Teardown runs once the job is finished, when the worker shuts down: the outputs are written
    by then, like a runner that aborts at exit.
    """

    def process(self, element):
        yield element

    def teardown(self) -> None:
        os._exit(134)


class WaitForAnotherWorker(beam.DoFn):
    """Records this worker's pid, then waits until a second worker process has recorded its own.

    Two elements can only both finish if two workers process them at the same time.
    """

    def __init__(self, directory: str, timeout: float = 60.0):
        self._directory = directory
        self._timeout = timeout

    def process(self, element):
        directory = Path(self._directory)
        (directory / f"{os.getpid()}.pid").touch()
        deadline = time.monotonic() + self._timeout
        while len(list(directory.glob("*.pid"))) < 2:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no second worker processed an element within {self._timeout} s"
                )
            time.sleep(0.05)
        yield os.getpid()
