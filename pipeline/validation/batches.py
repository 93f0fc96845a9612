"""Split Parquet files -> Arrow list batches for TFDV.

Column types are kept as they are in the file (no cast to the dataset definition): a wrong type is
exactly what validation must report, not fail on. Nulls stay null lists (see
:func:`pipeline.arrow_io.to_list_batch`), so TFDV counts them as missing.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipeline.arrow_io import DEFAULT_BATCH_SIZE, ReadSplitBatches


def require_files(file_pattern: str) -> None:
    """Fail early, naming the pattern, instead of deep inside a Beam job."""
    matches = FileSystems.match([file_pattern])[0].metadata_list
    if not matches:
        raise FileNotFoundError(f"no files match {file_pattern!r}")


class ReadValidationBatches(beam.PTransform):
    """Parquet files -> PCollection of list RecordBatches in the files' own types.

    ``exclude`` names columns left out of the statistics: the label the warehouse computed is
    not part of the raw data contract (its rows were checked by the warehouse's filters).
    """

    def __init__(
        self,
        file_pattern: str,
        batch_size: int = DEFAULT_BATCH_SIZE,
        exclude: tuple[str, ...] = (),
    ):
        super().__init__()
        self._file_pattern = file_pattern
        self._batch_size = batch_size
        self._exclude = tuple(exclude)

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        batches = pbegin | "Read" >> ReadSplitBatches(self._file_pattern, None, self._batch_size)
        if not self._exclude:
            return batches
        return batches | "Exclude" >> beam.Map(_without, self._exclude)


def _without(batch, exclude: tuple[str, ...]):
    """``batch`` without the ``exclude`` columns (pyarrow 10's RecordBatch has no ``drop``)."""
    import pyarrow as pa

    kept = [i for i, name in enumerate(batch.schema.names) if name not in exclude]
    return pa.RecordBatch.from_arrays(
        [batch.column(i) for i in kept], names=[batch.schema.names[i] for i in kept]
    )
