"""Stages whose process starts early: output kept whole, started after the right stage, and
never left running when the run stops before the stage that collects it."""

from __future__ import annotations

import sys
from types import SimpleNamespace

from pipeline import run
from pipeline.background import StartedProcess
from pipeline.stages import EARLY_STARTS


def test_a_started_process_keeps_more_output_than_a_pipe_holds():
    # 1 MB on stdout and stderr: a child writing into pipes nobody reads would block for good.
    script = "import sys; sys.stdout.write('o' * 2**20); sys.stderr.write('e' * 2**20)"
    started = StartedProcess.start([sys.executable, "-c", script])
    returncode, stdout, stderr = started.finish()
    assert returncode == 0 and stdout == "o" * 2**20 and stderr == "e" * 2**20


def test_a_failing_process_reports_its_status_and_stderr():
    started = StartedProcess.start([sys.executable, "-c", "import sys; sys.exit('broken')"])
    returncode, _, stderr = started.finish()
    assert returncode == 1 and "broken" in stderr


def test_processes_start_after_the_stage_they_need_and_are_killed_if_never_collected(
    monkeypatch,
):
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    monkeypatch.setitem(
        EARLY_STARTS, "predict", ("export", lambda ctx: StartedProcess.start(sleeper))
    )
    ctx = SimpleNamespace(started={})
    run._start_early(ctx, "train", ["export", "parity", "predict"])
    assert ctx.started == {}  # predict needs the export, which has not run yet
    run._start_early(ctx, "export", ["parity", "predict"])
    process = ctx.started["predict"].process
    assert process.poll() is None  # running beside the stages in between
    run._start_early(ctx, "export", ["parity"])  # predict not selected: nothing more starts
    assert list(ctx.started) == ["predict"]
    run._stop_started(ctx)  # the run stopped (e.g. parity failed) before predict collected it
    assert process.poll() is not None and ctx.started == {}
