"""Stages whose process starts early: output kept whole, started after the right stage, and
never left running when the run stops before the stage that collects it."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from pipeline import run
from pipeline.background import StartedProcess, scratch_dir
from pipeline.datasets import get_dataset
from pipeline.runners import runs_in_this_process
from pipeline.stages import EARLY_STARTS, RunContext, start_transform


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


def test_killing_a_started_process_runs_its_cleanup(tmp_path):
    leftover = tmp_path / ".transform.staging-abc"
    leftover.mkdir()
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    started = StartedProcess.start(sleeper, cleanup=lambda: leftover.rmdir())
    started.kill()
    assert started.process.poll() is not None and not leftover.exists()


def test_a_killed_runs_scratch_directory_is_removed_by_the_next_one(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    killed = subprocess.Popen([
        sys.executable, "-c",
        "from pipeline.background import scratch_dir; print(scratch_dir('baselines'), flush=True);"
        "import time; time.sleep(120)",
    ], stdout=subprocess.PIPE, text=True)  # fmt: skip
    left = Path(killed.stdout.readline().strip())
    (left / "request.json").write_text("{}")
    mine = scratch_dir("baselines")  # the other process is alive: its directory stays
    assert left.is_dir() and Path(mine).parent == tmp_path
    killed.kill()  # SIGKILL: no cleanup runs
    killed.wait()
    killed.stdout.close()
    other = tmp_path / "unrelated-1-dir"
    other.mkdir()
    newer = scratch_dir("baselines")
    assert not left.exists()  # its process is gone
    assert Path(mine).is_dir() and Path(newer).is_dir() and other.is_dir()  # alive or not ours
    assert Path(newer).name.startswith(f"baselines-{os.getpid()}-")


def test_only_the_direct_runner_lets_another_process_start_a_job():
    assert runs_in_this_process([]) and runs_in_this_process(["--runner=DirectRunner"])
    assert runs_in_this_process(["--runner", "direct", "--direct_num_workers=2"])
    assert not runs_in_this_process(["--runner=PortableRunner", "--job_endpoint=localhost:1"])
    assert not runs_in_this_process(["--runner=DataflowRunner"])


def _transform_ctx(tmp_path, dataset, beam_args):
    (tmp_path / "splits" / "train").mkdir(parents=True)
    return RunContext(dataset=dataset, run_dir=str(tmp_path), manifest={}, beam_args=beam_args)


def test_the_transform_starts_early_as_its_own_cli_with_the_runs_flags(tmp_path, monkeypatch):
    commands = []
    monkeypatch.setattr(
        StartedProcess, "start", classmethod(lambda cls, command, cleanup: commands.append(command))
    )
    ctx = _transform_ctx(tmp_path, get_dataset("taxi"), ["--direct_num_workers=1"])
    start_transform(ctx)
    [command] = commands
    assert command[1:3] == ["-m", "pipeline.transform"]
    assert f"--split=train={tmp_path / 'splits' / 'train'}" in command
    assert command[-1] == "--direct_num_workers=1"
    assert command[command.index("--output") + 1] == ctx.transform_dir
    # The child ends with this process (a killed run leaves nothing running).
    assert command[command.index("--parent-pid") + 1] == str(os.getpid())


def test_the_transform_stays_in_the_stage_where_a_child_could_not_do_the_same(tmp_path):
    taxi = get_dataset("taxi")
    portable = ["--runner=PortableRunner", "--job_endpoint=localhost:1"]
    assert start_transform(_transform_ctx(tmp_path / "a", taxi, portable)) is None
    in_code = dataclasses.replace(taxi, description="built in code, unknown to a child")
    assert start_transform(_transform_ctx(tmp_path / "b", in_code, [])) is None
