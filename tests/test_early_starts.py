"""Stages whose process starts early: output kept whole, started after the right stage, and
never left running when the run stops before the stage that collects it."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline import run
from pipeline.background import StartedProcess, prewarm, scratch_dir
from pipeline.datasets import get_dataset
from pipeline.runners import runs_in_this_process
from pipeline.stages import EARLY_STARTS, WARM_STARTS, RunContext, start_transform


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
    ctx = SimpleNamespace(started={}, warm={})
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


# ---- warm processes -------------------------------------------------------------------------

PROBE = """
import json, pathlib, sys, time
pathlib.Path(__file__).with_name("imported").write_text(str(time.time()))

def main(argv):
    if argv and argv[0] == "raise":
        raise ValueError("the probe broke")
    if argv and argv[0] == "exit":
        sys.exit("usage: probe NUMBER")
    print(json.dumps({"argv": argv, "sys_argv": sys.argv}))
    return int(argv[0]) if argv and argv[0].isdigit() else None
"""


@pytest.fixture
def probe(tmp_path, monkeypatch):
    """A module ``probe`` on the children's path; its import leaves a file ``imported``."""
    (tmp_path / "probe.py").write_text(PROBE)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    )
    return tmp_path


def _wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_a_warm_process_imports_first_then_runs_main_with_the_argv_sent(probe):
    warm = prewarm("probe")
    _wait_for(probe / "imported")  # imported before it has any work
    assert warm.process.poll() is None  # and waiting for it
    warm.send(["3", "--flag=a b"], cleanup=None)
    returncode, stdout, _ = warm.finish()
    answer = json.loads(stdout)
    assert returncode == 3 and answer["argv"] == ["3", "--flag=a b"]
    assert answer["sys_argv"] == ["probe", "3", "--flag=a b"]


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [(["raise"], 1, "ValueError: the probe broke"), (["exit"], 1, "usage: probe NUMBER"),
     (["x"], 0, "")],
)  # fmt: skip
def test_a_warm_process_exits_as_its_module_would(probe, argv, status, message):
    warm = prewarm("probe")
    warm.send(argv)
    returncode, _, stderr = warm.finish()
    assert returncode == status and message in stderr


def test_a_warm_process_never_given_work_ends_quietly(probe):
    warm = prewarm("probe")
    _wait_for(probe / "imported")
    returncode, stdout, stderr = warm.finish()  # the run needed no transform after all
    assert (returncode, stdout) == (0, "") and "Traceback" not in stderr
    killed = prewarm("probe")
    killed.kill()
    assert killed.process.poll() is not None


def test_the_transform_is_warm_only_when_its_early_start_will_happen(probe, monkeypatch):
    monkeypatch.setitem(WARM_STARTS, "transform", lambda ctx: prewarm("probe"))
    for selected, warmed in [
        (["data", "warehouse", "validation", "transform", "train"], True),
        (["warehouse", "transform"], True),
        (["transform", "train"], False),  # no warehouse stage: the stage runs it itself
        (["data", "warehouse", "validation"], False),
    ]:
        ctx = RunContext(dataset=get_dataset("taxi"), run_dir="", manifest={}, beam_args=[])
        run._prewarm(ctx, selected)
        assert (list(ctx.warm) == ["transform"]) is warmed, selected
        process = ctx.warm.get("transform")
        run._stop_started(ctx)  # the run stopped before the transform started
        assert ctx.warm == {} and (process is None or process.process.poll() is not None)


def test_the_transforms_early_start_hands_its_command_line_to_the_warm_process(probe, tmp_path):
    ctx = _transform_ctx(tmp_path, get_dataset("taxi"), ["--direct_num_workers=1"])
    warm = ctx.warm["transform"] = prewarm("probe")
    started = start_transform(ctx)
    assert started is warm and ctx.warm == {}
    returncode, stdout, _ = started.finish()
    argv = json.loads(stdout)["argv"]
    assert returncode == 0 and argv[:2] == ["--dataset", "taxi"]
    assert f"--split=train={tmp_path / 'splits' / 'train'}" in argv
    assert argv[argv.index("--output") + 1] == ctx.transform_dir
    assert argv[-1] == "--direct_num_workers=1"
    assert started.cleanup is not None  # a killed transform's staging is removed
