"""What a newcomer's ``python -m pipeline.run`` prints: progress lines only, unless --verbose.

Cheap on purpose: the data, warehouse and validation stages (TensorFlow and TFDV are imported
the way the full run imports them), then validation again with ``--verbose`` in the same run
directory. The full run's console is checked in ``test_run_e2e.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PYTHON, REPO_ROOT, subprocess_env

pytestmark = pytest.mark.slow

PROGRESS_LINE = re.compile(r"^\[\s*\d+\.\d+s\] \S")
REGISTRATION_ERRORS = (
    "Unable to register cuFFT factory",
    "Unable to register cuDNN factory",
    "Unable to register cuBLAS factory",
)
IPYTHON_NOTICE = "Unable to import IPython"


def newcomer_env() -> dict[str, str]:
    """The environment ``make run`` gives: TF_CPP_MIN_LOG_LEVEL=2 and no warnings filter."""
    env = subprocess_env()
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.pop("PYTHONWARNINGS", None)
    return env


def _run(runs_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [
        PYTHON, "-m", "pipeline.run", "--runner", "DirectRunner",
        "--runs-dir", str(runs_dir), "--data-dir", str(REPO_ROOT / "data"),
        "--run-id", "console", *extra,
    ]  # fmt: skip
    completed = subprocess.run(
        command, capture_output=True, text=True, cwd=REPO_ROOT, env=newcomer_env(), timeout=900
    )
    assert completed.returncode == 0, completed.stderr[-5000:]
    return completed


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    runs_dir = tmp_path_factory.mktemp("runs")
    quiet = _run(runs_dir, "--stages", "data,warehouse,validation", "--json")
    verbose = _run(runs_dir, "--stages", "validation", "--verbose")
    manifest = json.loads((runs_dir / "console" / "manifest.json").read_text())
    return quiet, verbose, manifest


def test_by_default_stderr_holds_only_progress_lines(runs):
    quiet, _, _ = runs
    lines = quiet.stderr.splitlines()
    assert lines, "no progress at all"
    assert [line for line in lines if not PROGRESS_LINE.match(line)] == []
    for message in (*REGISTRATION_ERRORS, IPYTHON_NOTICE, "FutureWarning"):
        assert message not in quiet.stderr


def test_verbose_shows_the_start_up_messages(runs):
    _, verbose, _ = runs
    for message in (*REGISTRATION_ERRORS, IPYTHON_NOTICE):
        assert message in verbose.stderr, message
    assert "validation: done in" in verbose.stderr  # progress still there


def test_a_progress_line_when_each_stage_starts_and_ends(runs):
    quiet, _, manifest = runs
    rows = manifest["rows_per_split"]
    started = {m.group(1): m.group(2) for m in re.finditer(r"\] (\w+): started(.*)", quiet.stderr)}
    done = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"\] (\w+): done in (\d+\.\d) s", quiet.stderr)
    }
    assert list(started) == list(done) == ["data", "warehouse", "validation"]
    for split, count in rows.items():
        assert f"{split}={count:,}" in started["validation"]
    # The times printed are the stage times the manifest records (validation's record is the
    # verbose rerun's).
    for name in ("data", "warehouse"):
        assert done[name] == pytest.approx(manifest["stages"][name]["seconds"], abs=0.15)
    assert re.search(r"validation: done in .*0 blocking anomalies, 0 warnings", quiet.stderr)
    assert re.search(r"\(\d+ Beam stages\)", quiet.stderr)


def test_json_summary_parses_and_matches_the_manifest(runs, tmp_path):
    quiet, _, manifest = runs
    summary = json.loads(quiet.stdout)
    assert summary["run_id"] == "console" and summary["status"] == "in_progress"
    assert summary["run_dir"] == manifest["run_dir"]
    assert summary["rows_per_split"] == manifest["rows_per_split"]
    assert list(summary["stages"]) == ["data", "warehouse", "validation"]
    assert all(stage["status"] == "succeeded" for stage in summary["stages"].values())
    # The verbose rerun of validation rewrote its record afterwards; the other two are as printed.
    for name in ("data", "warehouse"):
        assert summary["stages"][name] == {
            "status": manifest["stages"][name]["status"],
            "seconds": manifest["stages"][name]["seconds"],
        }
    blocking = sum(1 for a in manifest["anomalies"] if a["severity"] == "BLOCKING")
    assert summary["anomalies"]["blocking"] == blocking
    assert summary["anomalies"]["found"] == manifest["anomalies"]
    # Only the validation report exists yet; the model report comes with the evaluate stage.
    assert summary["reports"] == {"validation": manifest["stages"]["validation"]["report_html"]}


def test_processes_the_run_starts_inherit_the_quiet(tmp_path):
    """``pipeline.predict`` runs in a child process (the predict stage): after ``silence()`` its
    TensorFlow import is quiet too; without it, the same child prints the registration errors."""
    script = tmp_path / "child.py"
    script.write_text(
        "import json, os, subprocess, sys\n"
        "from pipeline import console\n"
        "child = [sys.executable, '-m', 'pipeline.predict', '--help']\n"
        "loud = subprocess.run(child, capture_output=True, text=True, env=dict(os.environ))\n"
        "console.silence()\n"
        "quiet = subprocess.run(child, capture_output=True, text=True)\n"
        "print(json.dumps([loud.returncode, loud.stderr, quiet.returncode, quiet.stderr]))\n"
    )
    completed = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=newcomer_env(),
        timeout=300,
        check=True,
    )
    loud_status, loud, quiet_status, quiet = json.loads(completed.stdout)
    assert loud_status == quiet_status == 0
    assert all(message in loud for message in REGISTRATION_ERRORS)
    assert quiet == ""


def test_the_quiet_import_drops_only_the_chosen_lines(tmp_path, monkeypatch, capsys):
    """The mechanism behind the hidden IPython notice, on a module of the test's own."""
    from pipeline.console import _QuietImport

    (tmp_path / "noisy_module.py").write_text(
        "import sys\n"
        "sys.stderr.write('Unable to import IPython: no module\\n')\n"
        "sys.stderr.write('a line that stays\\n')\n"
        "sys.stderr.write('TFDV visualization APIs will not function.\\n')\n"
        "VALUE = 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    finder = _QuietImport("noisy_module", ("Unable to import IPython", "TFDV visualization"))
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    monkeypatch.delitem(sys.modules, "noisy_module", raising=False)
    import noisy_module

    assert noisy_module.VALUE == 42
    assert capsys.readouterr().err == "a line that stays\n"
    monkeypatch.delitem(sys.modules, "noisy_module")
