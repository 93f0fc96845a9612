"""Dataset statistics with TFDV on Beam (Parquet splits, tf.Example logs), published atomically."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx_bsl.public import tfxio

from pipeline import storage
from pipeline.arrow_io import DEFAULT_BATCH_SIZE
from pipeline.runners import pipeline_options, run_pipeline
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
    return compute_split_statistics({str(output_path): file_pattern}, beam_args, exclude)[
        str(output_path)
    ]


def compute_split_statistics(
    patterns: dict[str, str],
    beam_args: list[str] | None = None,
    exclude: tuple[str, ...] = (),
) -> dict[str, statistics_pb2.DatasetFeatureStatisticsList]:
    """Statistics of several sets of Parquet files (``output path -> file pattern``), computed
    by one Beam pipeline and published like :func:`compute_statistics`.

    One pipeline, not one per split: a Beam job's start and its fused stages cost about 1 s on
    the DirectRunner, whatever the rows.
    """
    for pattern in patterns.values():
        require_files(pattern)
    sources = {
        output: ReadValidationBatches(pattern, exclude=exclude)
        for output, pattern in patterns.items()
    }
    return _publish_statistics(sources, beam_args)


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
    return _publish_statistics({str(output_path): source}, beam_args)[str(output_path)]


def _publish_statistics(
    sources: dict[str, beam.PTransform], beam_args: list[str] | None
) -> dict[str, statistics_pb2.DatasetFeatureStatisticsList]:
    """Run each source (-> list RecordBatches) through TFDV in one pipeline; publish each proto
    (``output path -> source``) atomically.

    TFDV writes into a staging directory beside each output (on Dataflow, a ``gs://`` prefix),
    Beam's own ``beam-temp-*`` files included; once the whole job succeeded each proto is
    renamed into place and the directories removed. A killed attempt leaves only those
    directories, which the next attempt deletes before it starts.
    """
    staged: dict[str, tuple[str, str]] = {}  # output path -> (staging dir, file inside)
    try:
        for output_path in sources:
            storage.makedirs(storage.parent(output_path))
            storage.remove_leftovers(output_path)
            staging = storage.staging_dir(output_path)
            staged[output_path] = (staging, storage.join(staging, storage.basename(output_path)))
        pipeline = beam.Pipeline(options=pipeline_options(beam_args))
        for index, (output_path, source) in enumerate(sources.items()):
            _ = (
                pipeline
                | f"Read[{index}]" >> source
                | f"GenerateStatistics[{index}]" >> tfdv.GenerateStatistics(stats_options())
                | f"WriteStatistics[{index}]"
                >> tfdv.WriteStatisticsToBinaryFile(staged[output_path][1])
            )
        run_pipeline(pipeline, "statistics of " + ", ".join(sources))
        for output_path, (_, temp_path) in staged.items():
            storage.rename_file(temp_path, output_path)
    finally:
        for staging, _ in staged.values():
            storage.rmtree(staging)
    return {output_path: load_statistics(output_path) for output_path in sources}


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
