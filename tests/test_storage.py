"""pipeline.storage on a local disk and on GCS (the real google-cloud-storage client, emulated)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import storage


@pytest.fixture(params=["local", "gcs"])
def root(request, tmp_path) -> str:
    """The same tests on a local directory and on a gs:// bucket."""
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("gcs_bucket") + "/root"


def write_tree(root: str, files: dict[str, bytes]) -> None:
    for relative, payload in files.items():
        with storage.open_write(storage.join(root, *relative.split("/"))) as handle:
            handle.write(payload)


TREE = {"a.txt": b"alpha", "sub/b.bin": b"\x00\x01" * 1000, "sub/deep/c.txt": b"gamma"}


def test_write_read_and_list(root):
    assert not storage.exists(root)
    assert storage.listdir(root) == []
    write_tree(root, TREE)
    assert storage.exists(root) and storage.isdir(root)
    assert storage.listdir(root) == ["a.txt", "sub"]
    assert storage.subdirs(root) == ["sub"]
    assert storage.files_below(root) == sorted(TREE)
    assert storage.read_bytes(storage.join(root, "sub", "b.bin")) == TREE["sub/b.bin"]
    assert storage.isfile(storage.join(root, "a.txt"))
    assert not storage.isfile(storage.join(root, "sub"))
    # '*' stays within one level: the deep file is not a match of sub/*
    assert [storage.basename(p) for p in storage.glob(storage.join(root, "sub", "*"))] == ["b.bin"]


def test_digests_do_not_depend_on_where_the_tree_is(root, tmp_path):
    write_tree(root, TREE)
    local = tmp_path / "copy"
    write_tree(str(local), TREE)
    assert storage.tree_digest(root) == storage.tree_digest(local)
    write_tree(root, {"sub/deep/c.txt": b"changed"})
    assert storage.tree_digest(root) != storage.tree_digest(local)


def test_json_is_replaced_whole(root):
    path = storage.join(root, "manifest.json")
    storage.write_json_atomic(path, {"status": "running"})
    storage.write_json_atomic(path, {"status": "succeeded", "n": 2})
    assert storage.read_text(path) == '{\n  "status": "succeeded",\n  "n": 2\n}\n'
    assert storage.listdir(root) == ["manifest.json"]  # no temporary left beside it


def test_staged_directory_publishes_only_a_complete_directory(root):
    final = storage.join(root, "artifact")
    with storage.staged_directory(final) as staging:
        write_tree(staging, TREE)
        assert not storage.exists(final)
    assert storage.files_below(final) == sorted(TREE)
    assert storage.listdir(root) == ["artifact"]  # the staging copy is gone


def test_a_failed_stage_leaves_the_old_artifact_and_no_staging(root):
    final = storage.join(root, "artifact")
    write_tree(final, {"old.txt": b"old"})
    with pytest.raises(RuntimeError, match="boom"), storage.staged_directory(final) as staging:
        write_tree(staging, TREE)
        raise RuntimeError("boom")
    assert storage.files_below(final) == ["old.txt"]
    assert storage.listdir(root) == ["artifact"]


def test_a_rerun_replaces_the_artifact(root):
    final = storage.join(root, "artifact")
    write_tree(final, {"old.txt": b"old", "sub/b.bin": b"stale"})
    with storage.staged_directory(final) as staging:
        write_tree(staging, TREE)
    assert storage.files_below(final) == sorted(TREE)
    assert storage.read_bytes(storage.join(final, "sub", "b.bin")) == TREE["sub/b.bin"]


def test_publish_without_replace_refuses_an_existing_target(root):
    final = storage.join(root, "1")
    write_tree(final, {"saved_model.pb": b"v1"})
    staging = storage.staging_dir(final)
    write_tree(staging, {"saved_model.pb": b"v2"})
    with pytest.raises(FileExistsError):
        storage.publish_dir(staging, final, replace=False)
    assert storage.read_bytes(storage.join(final, "saved_model.pb")) == b"v1"


def test_copy_between_local_and_gcs_round_trips(gcs_bucket, tmp_path):
    source = tmp_path / "source"
    write_tree(str(source), TREE)
    remote = gcs_bucket + "/copy"
    storage.copytree(source, remote)
    back = tmp_path / "back"
    storage.copytree(remote, back)
    assert storage.tree_digest(back) == storage.tree_digest(source)
    storage.rmtree(remote)
    assert not storage.exists(remote)


def test_join_keeps_uris_intact(tmp_path):
    assert storage.join("gs://b/runs/", "x", "manifest.json") == "gs://b/runs/x/manifest.json"
    assert storage.parent("gs://b/runs/x/") == "gs://b/runs"
    assert storage.basename("gs://b/runs/x/") == "x"
    assert storage.join(tmp_path, "x") == str(tmp_path / "x")


def test_a_killed_attempts_staging_copies_are_removed_when_the_stage_runs_again(tmp_path):
    final = tmp_path / "run" / "transform"
    killed = tmp_path / "run" / ".transform.staging-0123abcd-xyz"
    replaced = tmp_path / "run" / ".transform.replaced-4567"
    other = tmp_path / "run" / ".model.staging-89ab"  # another artifact's: not ours to remove
    for leftover in (killed, replaced, other):
        (leftover / "examples").mkdir(parents=True)
        (leftover / "examples" / "train-00000.tfrecord.gz").write_bytes(b"half")
    with storage.staged_directory(final) as staging:
        (Path(staging) / "done").write_text("whole")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        ".model.staging-89ab",
        "transform",
    ]
    assert (final / "done").read_text() == "whole"
