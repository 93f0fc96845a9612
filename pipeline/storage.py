"""Run artifacts on a local disk or in an object store (``gs://`` in production), one API.

Every stage names its inputs and outputs as strings: a local path, or a URI with a scheme. Local
paths keep the file system's guarantees (a directory is published by one atomic rename). Remote
URIs go through Beam's ``FileSystems`` (the same client the Beam stages use on Dataflow, and the
one ``STORAGE_EMULATOR_HOST`` redirects in tests); TensorFlow's own writers (SavedModels, the
transform graph, TFRecords) reach ``gs://`` through ``tf.io.gfile``.

Object stores have no directory rename. A remote "publish" copies the staged objects to the final
prefix and then deletes the staging prefix, so for a moment the final prefix can be incomplete.
What makes that safe is the run manifest: a stage's record says ``running`` from the moment it
starts (written before the stage touches its outputs) and ``succeeded`` only after its artifacts
are complete, and every stage reads its inputs only through records that say ``succeeded``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

PathLike = str | os.PathLike


def is_remote(location: PathLike) -> bool:
    """True for ``scheme://...`` URIs (``gs://``), False for local paths."""
    return "://" in str(location)


def join(base: PathLike, *parts: str) -> str:
    """``base/part/...`` for either kind of location."""
    if is_remote(base):
        return posixpath.join(str(base).rstrip("/"), *parts)
    return os.path.join(os.fspath(base), *parts)


def basename(location: PathLike) -> str:
    return posixpath.basename(str(location).rstrip("/"))


def parent(location: PathLike) -> str:
    if is_remote(location):
        return posixpath.dirname(str(location).rstrip("/"))
    return os.path.dirname(os.path.abspath(os.fspath(location)))


def _filesystems():
    from apache_beam.io.filesystems import FileSystems

    _no_credentials_for_an_emulator()
    return FileSystems


def _no_credentials_for_an_emulator() -> None:
    """Against a GCS emulator (``STORAGE_EMULATOR_HOST``) connect anonymously at once.

    google-cloud-storage ignores credentials for an emulator anyway, but Beam first looks for
    Application Default Credentials with about 30 s of retries per process. Beam caches the
    outcome per process; this records the outcome it would reach (none) up front.
    """
    if not os.environ.get("STORAGE_EMULATOR_HOST"):
        return
    from apache_beam.internal.gcp import auth

    with auth._Credentials._credentials_lock:
        if not auth._Credentials._credentials_init:
            auth._Credentials._credentials, auth._Credentials._credentials_init = None, True


def _uncompressed():
    from apache_beam.io.filesystem import CompressionTypes

    return CompressionTypes.UNCOMPRESSED


def _remote_files(prefix: str) -> list[str]:
    """Every object below ``prefix`` (recursively), sorted."""
    pattern = str(prefix).rstrip("/") + "/**"
    results = _filesystems().match([pattern])[0].metadata_list
    return sorted(m.path for m in results)


# ---- queries --------------------------------------------------------------------------------


def exists(location: PathLike) -> bool:
    """A file, or a directory (remote: any object below the prefix)."""
    if not is_remote(location):
        return os.path.exists(location)
    return _filesystems().exists(str(location)) or isdir(location)


def isfile(location: PathLike) -> bool:
    if not is_remote(location):
        return os.path.isfile(location)
    return _filesystems().exists(str(location))


def isdir(location: PathLike) -> bool:
    if not is_remote(location):
        return os.path.isdir(location)
    return bool(_remote_files(str(location)))


def listdir(location: PathLike) -> list[str]:
    """Names of the entries directly inside ``location``, sorted; [] when it does not exist."""
    if not is_remote(location):
        return sorted(os.listdir(location)) if os.path.isdir(location) else []
    prefix = str(location).rstrip("/") + "/"
    return sorted({path[len(prefix) :].split("/", 1)[0] for path in _remote_files(prefix)})


def subdirs(location: PathLike) -> list[str]:
    """Names of the directories directly inside ``location``, sorted."""
    if not is_remote(location):
        return [n for n in listdir(location) if os.path.isdir(os.path.join(location, n))]
    prefix = str(location).rstrip("/") + "/"
    return sorted(
        {
            path[len(prefix) :].split("/", 1)[0]
            for path in _remote_files(prefix)
            if "/" in path[len(prefix) :]
        }
    )


def glob(pattern: PathLike) -> list[str]:
    """Files matching ``pattern`` (``*`` stays within one directory level), sorted."""
    if not is_remote(pattern):
        import glob as local_glob

        return sorted(p for p in local_glob.glob(os.fspath(pattern)) if os.path.isfile(p))
    results = _filesystems().match([str(pattern)])[0].metadata_list
    return sorted(m.path for m in results)


def files_below(location: PathLike) -> list[str]:
    """Every file below ``location`` as paths relative to it (``/``-separated), sorted."""
    if is_remote(location):
        prefix = str(location).rstrip("/") + "/"
        return [path[len(prefix) :] for path in _remote_files(prefix)]
    root = Path(location)
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# ---- reading and writing --------------------------------------------------------------------


def open_read(location: PathLike) -> IO[bytes]:
    if not is_remote(location):
        return open(location, "rb")
    return _filesystems().open(str(location), compression_type=_uncompressed())


def open_write(location: PathLike) -> IO[bytes]:
    """A binary writer; local parents are created. Remote objects appear when it is closed."""
    if not is_remote(location):
        os.makedirs(os.path.dirname(os.path.abspath(location)), exist_ok=True)
        return open(location, "wb")
    return _filesystems().create(str(location), compression_type=_uncompressed())


def read_bytes(location: PathLike) -> bytes:
    with open_read(location) as handle:
        return handle.read()


def read_text(location: PathLike) -> str:
    return read_bytes(location).decode("utf-8")


def write_bytes_atomic(location: PathLike, payload: bytes) -> None:
    """Readers see the old content or the new one, never a part (remote: one object upload)."""
    if is_remote(location):
        with open_write(location) as handle:
            handle.write(payload)
        return
    directory = os.path.dirname(os.path.abspath(location))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(location)}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.chmod(tmp, 0o644)
        os.replace(tmp, location)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(location: PathLike, text: str) -> None:
    write_bytes_atomic(location, text.encode("utf-8"))


def write_json_atomic(location: PathLike, payload: Any) -> None:
    write_text_atomic(location, json.dumps(payload, indent=2, default=str) + "\n")


def sha256(location: PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open_read(location) as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def tree_digest(root: PathLike) -> str:
    """One sha256 over every file below ``root`` (relative path + content), order-independent."""
    digest = hashlib.sha256()
    for relative in files_below(root):
        digest.update(relative.encode())
        digest.update(sha256(join(root, *relative.split("/"))).encode())
    return digest.hexdigest()


# ---- moving things --------------------------------------------------------------------------


def makedirs(location: PathLike) -> None:
    """Create a local directory (and parents); object stores need none."""
    if not is_remote(location):
        os.makedirs(location, exist_ok=True)


def rmtree(location: PathLike) -> None:
    """Delete ``location`` and everything below it; nothing there is fine."""
    if not is_remote(location):
        if os.path.isdir(location) and not os.path.islink(location):
            shutil.rmtree(location, ignore_errors=True)
        elif os.path.lexists(location):
            os.unlink(location)
        return
    files = _remote_files(str(location))
    if _filesystems().exists(str(location)):
        files.append(str(location))
    if files:
        _filesystems().delete(files)


def rename_file(source: PathLike, destination: PathLike) -> None:
    """Move one file (local: atomic rename; remote: copy then delete)."""
    if not is_remote(source) and not is_remote(destination):
        os.replace(source, destination)
        return
    _filesystems().rename([str(source)], [str(destination)])


def copytree(source: PathLike, destination: PathLike) -> None:
    """Copy every file below ``source`` to the same relative path below ``destination``."""
    if not is_remote(source) and not is_remote(destination):
        shutil.copytree(source, destination, dirs_exist_ok=True)
        return
    for relative in files_below(source):
        parts = relative.split("/")
        with (
            open_read(join(source, *parts)) as reader,
            open_write(join(destination, *parts)) as writer,
        ):
            shutil.copyfileobj(reader, writer, 1 << 22)


def publish_dir(
    staging: PathLike, final: PathLike, *, replace: bool = True, last: tuple[str, ...] = ()
) -> None:
    """Make the complete ``staging`` directory the one at ``final``; see the module doc.

    Locally one rename (an old ``final`` is moved aside first and deleted after). Remotely the
    staged objects are moved below ``final`` after anything already there is deleted; the
    relative paths in ``last`` move after all others, so a reader that waits for one of them
    (a SavedModel's ``saved_model.pb``) never sees a part of the directory.
    """
    if not replace and exists(final):
        raise FileExistsError(f"{final} already exists")
    if is_remote(final):
        rmtree(final)
        relatives = sorted(
            files_below(staging), key=lambda r: (r in last, last.index(r) if r in last else 0)
        )
        for relative in relatives:
            parts = relative.split("/")
            _filesystems().rename([join(staging, *parts)], [join(final, *parts)])
        rmtree(staging)
        return
    previous = None
    if os.path.lexists(final):
        previous = os.path.join(
            os.path.dirname(os.path.abspath(final)),
            f".{os.path.basename(final)}.replaced-{uuid.uuid4().hex[:12]}",
        )
        os.rename(final, previous)
    os.rename(staging, final)
    if previous is not None:
        rmtree(previous)


def staging_dir(final: PathLike) -> str:
    """A fresh, unique staging location beside ``final`` (hidden by its leading dot)."""
    name = f".{basename(final)}.staging-{uuid.uuid4().hex[:12]}"
    if is_remote(final):
        return join(parent(final), name)
    directory = parent(final)
    os.makedirs(directory, exist_ok=True)
    return tempfile.mkdtemp(prefix=name + "-", dir=directory)


def leftover_copies(final: PathLike) -> list[str]:
    """Staging and replaced copies of ``final`` that a killed process left beside it."""
    prefix = f".{basename(final)}."
    return [
        join(parent(final), name)
        for name in listdir(parent(final))
        if name.startswith(prefix) and (".staging-" in name or ".replaced-" in name)
    ]


def remove_leftovers(final: PathLike) -> list[str]:
    """Delete what :func:`leftover_copies` finds; returns what was removed.

    A stage publishes ``final`` alone (a run directory is written by one run at a time), so any
    staging copy found when it starts again belongs to an attempt that died before publishing.
    """
    removed = leftover_copies(final)
    for path in removed:
        rmtree(path)
    return removed


@contextlib.contextmanager
def staged_directory(final: PathLike) -> Iterator[str]:
    """Yield a staging location; on success it is published as ``final``, on error removed.

    An existing ``final`` is replaced, so reruns are idempotent; staging copies a killed
    attempt left beside ``final`` are removed first.
    """
    if exists(parent(final)):
        remove_leftovers(final)
    staging = staging_dir(final)
    try:
        yield staging
    except BaseException:
        rmtree(staging)
        raise
    try:
        publish_dir(staging, final)
    except BaseException:
        rmtree(staging)
        raise
