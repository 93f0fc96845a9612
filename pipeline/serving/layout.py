"""The model base on disk: ``<model_base>/<version>/`` SavedModels plus a blessing sidecar.

Shared by the server (which versions can be loaded) and :mod:`pipeline.push` (which version is
served now, and with what AUC). A local version directory appears only by an atomic rename, and
in an object store its ``saved_model.pb`` is the last object to land, so any numeric directory
holding ``saved_model.pb`` is complete; names starting with a dot are staging
or replaced copies in flight and are never read. Pure Python: no TensorFlow import.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline import storage

SAVED_MODEL_FILE = "saved_model.pb"
# Written by the push inside the version directory, so model and blessing appear in one rename.
# TensorFlow Serving ignores files a SavedModel does not reference.
BLESSING_FILE = "blessing.json"


def version_of(name: str) -> int | None:
    """The version a directory name stands for, or None for hidden, staging or other names."""
    if not name.isascii() or not name.isdigit():
        return None
    return int(name)


def complete_versions(model_base: Path | str) -> list[int]:
    """Numeric version directories that hold a SavedModel, ascending (a path or gs:// URI)."""
    versions = []
    for name in storage.listdir(model_base):
        version = version_of(name)
        if version is not None and storage.isfile(storage.join(model_base, name, SAVED_MODEL_FILE)):
            versions.append(version)
    return sorted(versions)


def version_dir(model_base: Path, version: int) -> Path:
    return Path(model_base) / str(version)


def read_blessing(directory: Path | str) -> dict[str, Any] | None:
    """The blessing a push recorded in a version directory; None if there is none or it is bad."""
    path = storage.join(directory, BLESSING_FILE)
    try:
        payload = json.loads(storage.read_text(path)) if storage.isfile(path) else None
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None
