"""Push: the blessing rule, version numbering, and an all-or-nothing publish.

The push only copies files, so these tests use small stand-in exports; the server tests push the
real trained export.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

import pipeline.push as push_module
from pipeline import storage
from pipeline.push import EXIT_NOT_BLESSED, BlessingRule, decide, main, push
from pipeline.serving.layout import BLESSING_FILE, complete_versions, read_blessing

AUC = BlessingRule("auc", higher_is_better=True, floor=0.5, tolerance=0.01)
RMSE = BlessingRule("rmse", higher_is_better=False, floor=40.0, tolerance=0.5)


def fake_export(path: Path, content: bytes = b"graph") -> Path:
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(content)
    (path / "variables" / "variables.index").write_bytes(b"index")
    (path / "variables" / "variables.data-00000-of-00001").write_bytes(b"\0" * 4096)
    (path / "assets").mkdir()
    (path / "assets" / "vocab_company").write_text("Flash Cab\nYellow Cab\n")
    return path


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@pytest.fixture
def export(tmp_path) -> Path:
    return fake_export(tmp_path / "exports" / "1")


def test_first_push_above_the_floor_is_published_whole(export, tmp_path):
    base = tmp_path / "base"
    decision = push(export, base, 0.8, AUC)
    assert decision.blessed and decision.version == 1
    assert decision.baseline_version is None and "no served auc" in decision.reason
    assert entries(base) == ["1"]
    published = base / "1"
    for source in export.rglob("*"):
        if source.is_file():
            assert (published / source.relative_to(export)).read_bytes() == source.read_bytes()
    blessing = read_blessing(published)
    assert (blessing["metric"], blessing["value"], blessing["blessed"]) == ("auc", 0.8, True)
    assert len(blessing["digest"]) == 64


@pytest.mark.parametrize("auc", [0.5, 0.42, math.nan])
def test_not_above_the_floor_publishes_nothing(export, tmp_path, auc):
    base = tmp_path / "base"
    decision = push(export, base, auc, AUC)
    assert not decision.blessed and decision.version is None
    assert entries(base) == []


def test_compared_with_the_served_versions_recorded_auc(export, tmp_path):
    base = tmp_path / "base"
    assert push(export, base, 0.80, AUC).version == 1
    worse = push(export, base, 0.78, AUC)
    assert not worse.blessed
    assert (worse.baseline_version, worse.baseline_value) == (1, 0.80)
    assert "worse than the served 0.8000" in worse.reason
    assert entries(base) == ["1"]
    within = push(export, base, 0.795, AUC)
    assert within.blessed and within.version == 2
    assert read_blessing(base / "2")["baseline_value"] == 0.80
    # The baseline is now version 2's AUC, not the best ever seen.
    assert push(export, base, 0.79, AUC).version == 3


def test_a_version_pushed_by_hand_is_judged_on_the_floor(export, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(export, base / "7")
    decision = push(export, base, 0.6, AUC)
    assert decision.blessed and decision.baseline_version == 7 and decision.baseline_value is None
    assert decision.version == 8


def test_versions_keep_the_exports_time_number_and_only_grow(tmp_path):
    base = tmp_path / "base"
    stamped = fake_export(tmp_path / "exports" / "1763800000")
    assert push(stamped, base, 0.8, AUC).version == 1763800000
    older = fake_export(tmp_path / "exports" / "1700000000")
    assert push(older, base, 0.8, AUC).version == 1763800001
    with pytest.raises(ValueError, match="not newer"):
        push(older, base, 0.8, AUC, version=5)


def test_an_existing_target_is_never_overwritten(export, tmp_path):
    base = tmp_path / "base"
    (base / "4").mkdir(parents=True)  # incomplete: no saved_model.pb, so not served
    (base / "4" / "marker").write_text("keep")
    with pytest.raises(FileExistsError):
        push(export, base, 0.8, AUC, version=4)
    assert entries(base) == ["4"] and entries(base / "4") == ["marker"]


def test_a_failed_copy_leaves_nothing_at_the_target(export, tmp_path, monkeypatch):
    base = tmp_path / "base"
    push(export, base, 0.8, AUC)

    def copy_then_fail(source: str, destination: str) -> None:
        source, destination = Path(source), Path(destination)
        (destination / "saved_model.pb").write_bytes((source / "saved_model.pb").read_bytes())
        raise OSError("disk full")

    monkeypatch.setattr(push_module.storage, "copytree", copy_then_fail)
    with pytest.raises(OSError, match="disk full"):
        push(export, base, 0.9, AUC)
    assert entries(base) == ["1"]  # no "2", no hidden staging directory left behind
    assert complete_versions(base) == [1]


def test_a_corrupt_copy_is_caught_before_it_is_published(export, tmp_path, monkeypatch):
    base = tmp_path / "base"

    def corrupting_copy(source: str, destination: str) -> None:
        source, destination = Path(source), Path(destination)
        shutil.copytree(source, destination, dirs_exist_ok=True)
        (destination / "variables" / "variables.index").write_bytes(b"truncated")

    monkeypatch.setattr(push_module.storage, "copytree", corrupting_copy)
    with pytest.raises(OSError, match="does not match"):
        push(export, base, 0.9, AUC)
    assert entries(base) == []


def test_server_sees_only_complete_numeric_versions(tmp_path):
    base = tmp_path / "base"
    fake_export(base / "3")
    fake_export(base / ".4.staging-abc")
    fake_export(base / "latest")
    (base / "5").mkdir()  # no saved_model.pb yet
    (base / "2").mkdir()
    (base / "2" / BLESSING_FILE).write_text("{not json")
    fake_export(base / "1")
    assert complete_versions(base) == [1, 3]
    assert read_blessing(base / "2") is None


def test_blessing_rule():
    assert decide(0.8, AUC, None)[0]
    assert decide(0.8, AUC, 0.805)[0]
    assert not decide(0.8, AUC, 0.811)[0]
    assert not decide(0.5, AUC, None)[0]
    assert not decide(math.inf, AUC, None)[0]


def test_cli_exit_status_and_json(export, tmp_path, capsys):
    base = tmp_path / "base"
    args = ["--export-dir", str(export), "--model-base", str(base), "--floor", "0.6"]
    assert main([*args, "--value", "0.9"]) == 0
    pushed = json.loads(capsys.readouterr().out)
    assert pushed["blessed"] and pushed["version_dir"] == str(base / "1")
    assert main([*args, "--value", "0.55"]) == EXIT_NOT_BLESSED
    refused = json.loads(capsys.readouterr().out)
    assert not refused["blessed"] and "floor" in refused["reason"]


def test_push_to_a_gcs_model_base(export, tmp_path, gcs_bucket):
    """A gs:// base: versions numbered and judged from the objects, blessing beside the model."""
    base = f"{gcs_bucket}/models/taxi"
    first = push(export, base, 0.8, AUC)
    assert first.blessed and first.version_dir == f"{base}/1"
    assert complete_versions(base) == [1]
    assert storage.tree_digest(f"{base}/1") != storage.tree_digest(export)  # + blessing.json
    assert storage.read_bytes(f"{base}/1/saved_model.pb") == b"graph"
    assert read_blessing(f"{base}/1")["value"] == 0.8

    worse = push(fake_export(tmp_path / "exports" / "2"), base, 0.7, AUC)
    assert not worse.blessed and worse.baseline_value == 0.8
    better = push(fake_export(tmp_path / "exports" / "3", b"graph3"), base, 0.81, AUC)
    assert better.blessed and better.version == 3
    assert complete_versions(base) == [1, 3]
    assert storage.listdir(base) == ["1", "3"]  # no staging objects left behind


def test_a_failed_copy_to_gcs_leaves_nothing(export, gcs_bucket, monkeypatch):
    base = f"{gcs_bucket}/models/taxi"

    def copy_then_fail(source: str, destination: str) -> None:
        storage.write_bytes_atomic(f"{destination}/saved_model.pb", b"partial")
        raise OSError("connection reset")

    monkeypatch.setattr(push_module.storage, "copytree", copy_then_fail)
    with pytest.raises(OSError, match="connection reset"):
        push(export, base, 0.9, AUC)
    assert storage.listdir(base) == [] and complete_versions(base) == []
