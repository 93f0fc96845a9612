"""Child processes that run beside their parent: output kept in files, collected later.

A stage that can start work before it is needed (the predict stage's fresh process, the
baseline models) starts a child, carries on, and collects the child's exit status and output
when it needs them. Output goes to temporary files, not pipes: a child that writes more than a
pipe holds would wait for a reader. :func:`die_with_parent` lets a child that works for a run
end when the run's process is killed, and :func:`scratch_dir` lets the next run remove what
a killed one could not.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclasses.dataclass
class StartedProcess:
    """A child process, its output kept in temporary files until it is collected."""

    process: subprocess.Popen
    stdout: IO[str]
    stderr: IO[str]
    started_at: float
    # What :meth:`kill` does once the process ended, e.g. remove the output it was staging.
    cleanup: Callable[[], object] | None = None

    @classmethod
    def start(
        cls, command: list[str], cleanup: Callable[[], object] | None = None
    ) -> StartedProcess:
        stdout, stderr = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")  # noqa: SIM115
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True)
        return cls(process, stdout, stderr, time.perf_counter(), cleanup)

    def finish(self) -> tuple[int, str, str]:
        """Wait for the process: its exit status, stdout and stderr."""
        returncode = self.process.wait()
        with self.stdout, self.stderr:
            self.stdout.seek(0)
            self.stderr.seek(0)
            return returncode, self.stdout.read(), self.stderr.read()

    def kill(self) -> None:
        self.process.kill()
        self.finish()
        if self.cleanup is not None:
            self.cleanup()


def die_with_parent(parent_pid: int) -> None:
    """End this process when ``parent_pid`` dies (Linux; elsewhere a no-op).

    A child working for a killed run would otherwise go on using CPU for results nobody
    collects. Exits at once if the parent died before this call.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)


def scratch_dir(prefix: str) -> str:
    """A new temporary directory for a child's files, ``<prefix>-<this pid>-XXXX``.

    A process killed with SIGKILL runs no cleanup, so its directory stays; the pid in the name
    lets the next call remove every ``<prefix>-*`` directory whose process is gone.
    """
    for old in Path(tempfile.gettempdir()).glob(f"{prefix}-*-*"):
        pid = old.name[len(prefix) + 1 :].split("-", 1)[0]
        if old.is_dir() and pid.isdigit() and not _is_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{prefix}-{os.getpid()}-")


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True
