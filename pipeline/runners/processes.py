"""Child server processes of the portable runner: start, wait until listening, describe, stop.

The job server and the SDK worker pool run as children that print one ``<PREFIX><address>`` line
on stdout once they listen. Each runs in a session of its own, so that a forced stop also ends
the processes it started (its SDK workers) and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from pathlib import Path


class ServerStartError(RuntimeError):
    """A child server died or stayed silent instead of listening."""


def start_server(
    command: list[str], env: dict[str, str], ready_prefix: str, timeout: float, log_path: Path
) -> tuple[subprocess.Popen, str]:
    """Start ``command``; return it and the address it printed after ``ready_prefix``."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,
        )
    found: list[str] = []

    def read_ready_line() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(ready_prefix):
                found.append(line[len(ready_prefix) :].split()[0])
                return

    reader = threading.Thread(target=read_ready_line, daemon=True)
    reader.start()
    reader.join(timeout)
    if found:
        return process, found[0]
    status = process.poll()
    stop_server(process, timeout=5)
    what = describe_exit(status) if status is not None else f"did not listen within {timeout:.0f} s"
    raise ServerStartError(f"{' '.join(command[:3])} {what}; see {log_path}")


def stop_server(process: subprocess.Popen, timeout: float = 20.0) -> int:
    """SIGTERM, then after ``timeout`` SIGKILL of its whole session; returns its exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    if process.stdout:
        process.stdout.close()
    return process.returncode


def describe_exit(returncode: int | None) -> str:
    """``exited with status 134 (128 + SIGABRT)``, ``was killed by SIGKILL``, ``is running``."""
    if returncode is None:
        return "is still running"
    if returncode < 0:
        return f"was killed by {_signal_name(-returncode)}"
    if returncode > 128:
        return f"exited with status {returncode} (128 + {_signal_name(returncode - 128)})"
    return f"exited with status {returncode}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def log_tail(path: Path | str, lines: int = 3) -> str:
    """The last lines of a log on one line, for error messages."""
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"
