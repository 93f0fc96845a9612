"""Dataset folders, discovered: a dataset is its folder, nothing else needs to know its name.

A dataset folder holds ``definition.py`` (exposing ``DATASET``, or ``DATASETS`` for a family of
variants sharing one table, e.g. the same flights with a binary, a multi-class and a regression
label), optionally ``synthetic.py`` (a generator of rows shaped like the real ones, see
:func:`synthetic_generator`) and any files its source declares. Its reviewed schema is
``schemas/<schema name>/schema.pbtxt`` (package data), or ``schema.pbtxt`` inside the folder.

Folders are found in this package and in every directory listed in the environment variable
``PIPELINE_DATASET_PATH`` (``os.pathsep``-separated), so a team can keep its datasets in its own
repository. Adding a folder edits nothing else.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from pipeline.definition import DatasetDefinition

# The dataset a command line uses when none is named: the one place a default is chosen.
DEFAULT_DATASET = "taxi"
DATASET_PATH_ENV = "PIPELINE_DATASET_PATH"
DEFINITION_FILE = "definition.py"
SYNTHETIC_FILE = "synthetic.py"
PACKAGE_DIR = Path(__file__).resolve().parent


class UnknownDataset(KeyError):
    """No dataset folder defines this name (a usage error: command lines exit 2)."""

    def __str__(self) -> str:
        return str(self.args[0])


def dataset_roots() -> list[Path]:
    """Directories whose subfolders are dataset folders: this package, then the env's."""
    extra = [Path(p) for p in os.environ.get(DATASET_PATH_ENV, "").split(os.pathsep) if p]
    return [PACKAGE_DIR, *extra]


def _folders(roots: tuple[Path, ...]) -> list[Path]:
    return [
        folder
        for root in roots
        if root.is_dir()
        for folder in sorted(root.iterdir())
        if (folder / DEFINITION_FILE).is_file()
    ]


def _import_definition_module(folder: Path) -> ModuleType:
    """The folder's ``definition.py``: imported by package name when it lives in this package
    (so it pickles by reference), from its file otherwise."""
    if folder.parent == PACKAGE_DIR:
        return importlib.import_module(f"{__name__}.{folder.name}.definition")
    module_name = f"pipeline_dataset_{folder.name}_definition"
    spec = importlib.util.spec_from_file_location(module_name, folder / DEFINITION_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def _definitions_in(folder: Path) -> list[DatasetDefinition]:
    module = _import_definition_module(folder)
    found = getattr(module, "DATASETS", None) or (getattr(module, "DATASET", None),)
    definitions = [d for d in found if d is not None]
    if not definitions or not all(isinstance(d, DatasetDefinition) for d in definitions):
        raise TypeError(
            f"{folder / DEFINITION_FILE} must define DATASET (a DatasetDefinition) or DATASETS"
        )
    return [dataclasses.replace(d, folder=folder) for d in definitions]


@functools.cache
def _registry(roots: tuple[Path, ...]) -> dict[str, DatasetDefinition]:
    registry: dict[str, DatasetDefinition] = {}
    for folder in _folders(roots):
        for definition in _definitions_in(folder):
            if definition.name in registry:
                raise ValueError(
                    f"dataset {definition.name!r} is defined in {folder} and in "
                    f"{registry[definition.name].folder}"
                )
            registry[definition.name] = definition
    return registry


def registry() -> dict[str, DatasetDefinition]:
    """Every discovered dataset by name."""
    return _registry(tuple(dataset_roots()))


def dataset_names() -> list[str]:
    return sorted(registry())


def get_dataset(name: str | None = None) -> DatasetDefinition:
    """The definition called ``name`` (default: :data:`DEFAULT_DATASET`)."""
    name = name or DEFAULT_DATASET
    found = registry()
    if name not in found:
        raise UnknownDataset(
            f"unknown dataset {name!r}; known: {', '.join(sorted(found)) or 'none'} "
            f"(dataset folders are searched in {', '.join(map(str, dataset_roots()))}; add "
            f"directories with ${DATASET_PATH_ENV})"
        )
    return found[name]


def is_registered(definition: DatasetDefinition) -> bool:
    """Whether another process finds this very definition by its name (not so for one built in
    code): only then can a stage's work move into a child process."""
    try:
        return get_dataset(definition.name) == definition
    except UnknownDataset:
        return False


def synthetic_generator(definition: DatasetDefinition) -> ModuleType | None:
    """The folder's ``synthetic.py`` (with ``generate_chunks(rows, seed, start, days)``), if any."""
    folder = definition.folder
    if folder is None or not (folder / SYNTHETIC_FILE).is_file():
        return None
    if folder.parent == PACKAGE_DIR:
        return importlib.import_module(f"{__name__}.{folder.name}.synthetic")
    module_name = f"pipeline_dataset_{folder.name}_synthetic"
    spec = importlib.util.spec_from_file_location(module_name, folder / SYNTHETIC_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
