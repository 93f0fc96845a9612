"""Dataset statistics with TFDV on Beam (Parquet splits, tf.Example logs), published atomically."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import tensorflow_data_validation as tfdv
from apache_beam.options.pipeline_options import PipelineOptions
from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx_bsl.public import tfxio

from pipeline import storage
from pipeline.arrow_io import DEFAULT_BATCH_SIZE
from pipeline.runners import run_pipeline
from pipeline.validation.batches import ReadValidationBatches, require_files


def stats_options() -> tfdv.StatsOptions:
    """Statistics options shared by every split, so that their statistics stay comparable.

    TFDV's defaults are kept on purpose: skew/drift compare statistics from different runs, and
    a run that changed histogram sizes would show spurious distances.
    """
    return tfdv.StatsOptions()


def compute_statistics(
    file_pattern: str,
    output_path: str | Path,
    beam_args: list[str] | None = None,
    exclude: tuple[str, ...] = (),
) -> statistics_pb2.DatasetFeatureStatisticsList:
    """Compute TFDV statistics of the Parquet files matching ``file_pattern`` on Beam.

    ``exclude`` names columns to leave out (the label of split files). The binary proto is
    written next to ``output_path`` under a temporary name and renamed into place, so a reader
    never sees a half-written file.
    """
    require_files(file_pattern)
    source = ReadValidationBatches(file_pattern, exclude=exclude)
    return _publish_statistics(source, output_path, beam_args)


def compute_statistics_from_examples(
    file_pattern: str, output_path: str | Path, beam_args: list[str] | None = None
) -> statistics_pb2.DatasetFeatureStatisticsList:
    """TFDV statistics of uncompressed TFRecord files of raw ``tf.Example``s (serving logs).

    Read through tfx_bsl's TFExampleRecord TFXIO without a schema, so the statistics show the
    types and features the files really hold (a new or mistyped feature is then reported by
    validation rather than failing the read). Published atomically like
    :func:`compute_statistics`.
    """
    require_files(file_pattern)
    source = tfxio.TFExampleRecord(
        file_pattern, telemetry_descriptors=["pipeline", "validation"]
    ).BeamSource(DEFAULT_BATCH_SIZE)
    return _publish_statistics(source, output_path, beam_args)


def _publish_statistics(
    source: beam.PTransform, output_path: str, beam_args: list[str] | None
) -> statistics_pb2.DatasetFeatureStatisticsList:
    """Run ``source`` (-> list RecordBatches) through TFDV; publish the proto atomically.

    TFDV writes into a staging directory beside ``output_path`` (on Dataflow, a ``gs://``
    prefix), Beam's own ``beam-temp-*`` files included; the proto is then renamed into place
    and the directory removed. A killed attempt leaves only that directory, which the next
    attempt deletes before it starts.
    """
    output_path = str(output_path)
    storage.makedirs(storage.parent(output_path))
    storage.remove_leftovers(output_path)
    staging = storage.staging_dir(output_path)
    temp_path = storage.join(staging, storage.basename(output_path))
    try:
        pipeline = beam.Pipeline(options=PipelineOptions(beam_args or []))
        _ = (
            pipeline
            | "Read" >> source
            | "GenerateStatistics" >> tfdv.GenerateStatistics(stats_options())
            | "WriteStatistics" >> tfdv.WriteStatisticsToBinaryFile(temp_path)
        )
        run_pipeline(pipeline, f"statistics of {output_path}")
        storage.rename_file(temp_path, output_path)
    finally:
        storage.rmtree(staging)
    return load_statistics(output_path)


def load_statistics(path: str | Path) -> statistics_pb2.DatasetFeatureStatisticsList:
    """Read statistics written by :func:`compute_statistics` (a path or a gs:// URI)."""
    return statistics_pb2.DatasetFeatureStatisticsList.FromString(storage.read_bytes(path))


def feature_stats(
    stats: statistics_pb2.DatasetFeatureStatisticsList,
) -> dict[str, statistics_pb2.FeatureNameStatistics]:
    """Per-feature statistics of the first (unsliced) dataset, by feature name."""
    if not stats.datasets:
        return {}
    return {".".join(f.path.step) or f.name: f for f in stats.datasets[0].features}
