"""Child processes that run beside their parent: output kept in files, collected later.

A stage that can start work before it is needed (the predict stage's fresh process, the
baseline models) starts a child, carries on, and collects the child's exit status and output
when it needs them. Output goes to temporary files, not pipes: a child that writes more than a
pipe holds would wait for a reader. :func:`die_with_parent` lets a child that works for a run
end when the run's process is killed, and :func:`scratch_dir` lets the next run remove what
a killed one could not.

A child can also start *warm* (:func:`prewarm`), before its command line is known: it imports
its module (TensorFlow, TFT and Beam take seconds) while the stages it waits for run, then
reads its arguments from stdin (:meth:`StartedProcess.send`) and runs the module's ``main``.
"""

from __future__ import annotations

import atexit
import ctypes
import dataclasses
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
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
        cls,
        command: list[str],
        cleanup: Callable[[], object] | None = None,
        *,
        stdin: bool = False,
    ) -> StartedProcess:
        """Start ``command``; with ``stdin`` its standard input is a pipe (see :meth:`send`)."""
        stdout, stderr = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")  # noqa: SIM115
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            text=True,
        )
        return cls(process, stdout, stderr, time.perf_counter(), cleanup)

    def send(self, argv: Sequence[str], cleanup: Callable[[], object] | None = None) -> None:
        """Give a warm child (:func:`prewarm`) its command line; from now on it works."""
        assert self.process.stdin is not None, "not a warm process"
        self.process.stdin.write(json.dumps(list(argv)) + "\n")
        self.process.stdin.close()
        self.cleanup = cleanup
        self.started_at = time.perf_counter()

    def finish(self) -> tuple[int, str, str]:
        """Wait for the process: its exit status, stdout and stderr."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            self.process.stdin.close()  # a warm child never sent work: it ends
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


def prewarm(module: str) -> StartedProcess:
    """Start a child that imports ``module`` now and runs its ``main(argv)`` once
    :meth:`StartedProcess.send` gives it ``argv``; it ends with its parent, or quietly if stdin
    closes first (the run stopped or never needed it)."""
    command = [sys.executable, "-m", "pipeline.background", module, str(os.getpid())]
    return StartedProcess.start(command, stdin=True)


def exit_without_teardown(code: int) -> None:
    """End the process after the ``atexit`` handlers and a flush of stdout and stderr, without
    the interpreter's teardown.

    A process that loaded TensorFlow, TFT and Beam spends 1-2 s finalizing modules and threads
    at exit; for a child whose parent waits for its exit status that time is all waste.
    """
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def _serve_warm(module: str, parent_pid: int) -> None:
    """The warm child's side of :func:`prewarm`."""
    die_with_parent(parent_pid)
    main = importlib.import_module(module).main
    line = sys.stdin.readline()
    if not line:
        exit_without_teardown(0)
    argv = json.loads(line)
    sys.argv = [module, *argv]
    try:
        code = main(argv)
    except SystemExit as done:  # e.g. argparse's usage error
        code = done.code
    except BaseException:
        traceback.print_exc()
        code = 1
    if code is not None and not isinstance(code, int):  # as the interpreter does at exit
        print(code, file=sys.stderr)
        code = 1
    exit_without_teardown(code or 0)


if __name__ == "__main__":
    _serve_warm(sys.argv[1], int(sys.argv[2]))
