"""The model base on disk: ``<model_base>/<version>/`` SavedModels plus a blessing sidecar.

Shared by the server (which versions can be loaded) and :mod:`pipeline.push` (which version is
served now, and with what AUC). A version directory appears only by an atomic rename, so any
numeric directory holding ``saved_model.pb`` is complete; names starting with a dot are staging
or replaced copies in flight and are never read. Pure Python: no TensorFlow import.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SAVED_MODEL_FILE = "saved_model.pb"
# Written by the push inside the version directory, so model and blessing appear in one rename.
# TensorFlow Serving ignores files a SavedModel does not reference.
BLESSING_FILE = "blessing.json"


def version_of(name: str) -> int | None:
    """The version a directory name stands for, or None for hidden, staging or other names."""
    if not name.isascii() or not name.isdigit():
        return None
    return int(name)


def complete_versions(model_base: Path) -> list[int]:
    """Numeric version directories that hold a SavedModel, ascending."""
    base = Path(model_base)
    if not base.is_dir():
        return []
    versions = []
    for entry in base.iterdir():
        version = version_of(entry.name)
        if version is not None and (entry / SAVED_MODEL_FILE).is_file():
            versions.append(version)
    return sorted(versions)


def version_dir(model_base: Path, version: int) -> Path:
    return Path(model_base) / str(version)


def read_blessing(directory: Path) -> dict[str, Any] | None:
    """The blessing a push recorded in a version directory; None if there is none or it is bad."""
    path = Path(directory) / BLESSING_FILE
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None
