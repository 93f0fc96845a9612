"""The package Dataflow workers get: Beam's own ``--setup_file`` build of this checkout."""

from __future__ import annotations

import subprocess
import sys
import tarfile

from apache_beam.runners.portability.stager import Stager

from tests.conftest import REPO_ROOT


def test_the_setup_file_builds_a_complete_worker_package(tmp_path):
    sdist = Stager._build_setup_package(str(REPO_ROOT / "setup.py"), str(tmp_path / "dist"))
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for needed in (
        "pipeline/storage.py",
        "pipeline/tfrecord_io.py",
        "pipeline/datasets/taxi/definition.py",
        "pipeline/datasets/flights/definition.py",
        "schemas/taxi/schema.pbtxt",
        "schemas/flights/schema.pbtxt",
        "pipeline/warehouse/sql/split.sql",
        "transforms/preprocessing.py",
        "transforms/blocks.py",
    ):
        assert needed in names, f"{needed} missing from {sdist}"
    assert not any(name.startswith(("tests/", "dags/", "data/", "runs/")) for name in names)

    # Installed on its own (as on a worker), the package finds its SQL files, its dataset folders
    # and their schemas (package data, read without TensorFlow here: the text is enough).
    target = tmp_path / "worker"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), sdist],
        check=True,
        cwd=tmp_path,
    )  # fmt: skip
    probe = (
        "import pipeline, transforms.preprocessing\n"
        "from pipeline.warehouse.query import split_query\n"
        "from pipeline.warehouse.config import SplitConfig\n"
        "from pipeline.datasets import dataset_names, get_dataset\n"
        "from importlib import resources\n"
        f"assert pipeline.__file__.startswith({str(target)!r}), pipeline.__file__\n"
        "assert {'taxi', 'flights', 'flights_lateness'} <= set(dataset_names())\n"
        "schema = resources.files('schemas').joinpath('flights', 'schema.pbtxt').read_text()\n"
        "assert 'arr_delay' in schema\n"
        "print(len(split_query(SplitConfig(get_dataset('flights'))).sql))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert int(completed.stdout.strip().splitlines()[-1]) > 100
