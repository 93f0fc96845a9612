"""Transform stage: analyze the training split with TFT, transform every split, export the graph.

Data flows as Arrow RecordBatches end to end: Parquet -> list batches (``pipeline.arrow_io``) ->
``tft_beam.AnalyzeDataset`` / ``TransformDataset(output_record_batches=True)`` -> tfx_bsl's C++
``tf.Example`` encoder -> TensorFlow's C++ gzipped TFRecord writer, a batch per Beam element
(``pipeline.tfrecord_io``). No per-row Beam element and no per-row Python transform on the way.

Layout of the output directory (read it with ``tft.TFTransformOutput``)::

    transform_fn/            the transform graph with the training statistics as constants
    transformed_metadata/    schema of the transformed features
    examples/<split>-*.tfrecord.gz
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.beam import analysis_graph_builder, analyzer_cache
from tfx_bsl.tfxio.tensor_adapter import TensorAdapter

from pipeline import canonical_saved_model, storage, vocabularies
from pipeline.arrow_io import ReadSplitBatches
from pipeline.background import die_with_parent, exit_without_teardown
from pipeline.cli import add_dataset_argument, dataset_from_args, exit_on_usage_error
from pipeline.definition import DatasetDefinition
from pipeline.raw_schema import tensor_adapter_config
from pipeline.runners import pipeline_options, run_pipeline
from pipeline.tfrecord_io import WriteBatchesToTFRecord, finalize_shards
from transforms.preprocessing import make_preprocessing_fn

EXAMPLES_DIR = "examples"
METRICS_NAMESPACE = "transform"
ANALYZE_SPLIT = "train"

# TFT runs preprocessing_fn as a TF1 graph (``force_tf_compat_v1``): it is traced once per
# pipeline instead of five times as a tf.function, which halves the analysis's fixed cost
# (README, Benchmarks: transform fixed cost). The transform_fn is then a TF1 SavedModel; TFT's
# Keras layer loads it into the serving graph as a wrapped function with the same ops, and the
# parity proof checks that serving and training still agree feature by feature.
TF_COMPAT_V1 = True


@dataclasses.dataclass
class TransformResult:
    """Where the transform stage put its artifacts, and how long it took."""

    output_dir: str
    example_patterns: dict[str, str]
    rows: dict[str, int]
    seconds: float
    analysis: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def to_manifest(self) -> dict:
        return {
            "output_dir": str(self.output_dir),
            "transform_fn": storage.join(self.output_dir, "transform_fn"),
            "examples": self.example_patterns,
            "rows": self.rows,
            "analysis_spans": self.analysis,
            "seconds": round(self.seconds, 3),
        }


class _CountRows(beam.DoFn):
    """Counts rows per split in a Beam metric, passing batches through untouched."""

    def __init__(self, split: str):
        self._counter = beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"rows_{split}")

    def process(self, batch: pa.RecordBatch):
        self._counter.inc(batch.num_rows)
        yield batch


def _split_pattern(split_dir: Path | str) -> str:
    split_dir = str(split_dir)
    return split_dir if any(ch in split_dir for ch in "*?[") else f"{split_dir}/*.parquet"


def tft_context(temp_dir: str | Path, **settings) -> tft_beam.Context:
    """The TFT context every Beam job that runs preprocessing_fn or transform_fn uses."""
    return tft_beam.Context(temp_dir=str(temp_dir), force_tf_compat_v1=TF_COMPAT_V1, **settings)


def _read_counted(pipeline: beam.Pipeline, split: str, pattern: str, schema: pa.Schema):
    return (
        pipeline
        | f"Read[{split}]" >> ReadSplitBatches(pattern, schema)
        | f"Count[{split}]" >> beam.ParDo(_CountRows(split))
    )


def analyze(
    dataset: DatasetDefinition,
    span_patterns: dict[str, str],
    transform_fn_dir: str | Path,
    temp_dir: str | Path,
    beam_args: list[str] | None = None,
    cache_dir: str | Path | None = None,
) -> dict[str, list[str]]:
    """Full pass over the training data: write ``transform_fn`` and ``transformed_metadata``.

    The training data is one or more *spans* (e.g. one per day), each a Parquet pattern. With
    ``cache_dir``, TFT's analyzer cache keeps each span's partial results (vocabulary counts,
    quantile sketches, moments) under a key derived from the span's content, so a later analysis
    over old spans plus a new one reads only the new span. Returns which spans were read and
    which came from the cache.
    """
    adapter_config = tensor_adapter_config(dataset)
    preprocessing_fn = make_preprocessing_fn(dataset, vocabularies.make_analyzer)
    keys = {span: _span_key(span, pattern) for span, pattern in span_patterns.items()}
    pipeline = beam.Pipeline(options=pipeline_options(beam_args))
    with tft_context(temp_dir):
        input_cache = {}
        if cache_dir is not None and _has_cache(cache_dir):
            input_cache = pipeline | "ReadCache" >> analyzer_cache.ReadAnalysisCacheFromFS(
                str(cache_dir), list(keys.values())
            )
        needed = _spans_to_read(preprocessing_fn, adapter_config, keys, input_cache)
        data = {
            key: _read_counted(pipeline, span, span_patterns[span], adapter_config.arrow_schema)
            if key in needed
            else pipeline | f"Cached[{span}]" >> beam.Create([], reshuffle=False)
            for span, key in keys.items()
        }
        transform_fn, output_cache = (
            data,
            input_cache,
            adapter_config,
        ) | "Analyze" >> tft_beam.AnalyzeDatasetWithCache(preprocessing_fn)
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(str(transform_fn_dir))
        if cache_dir is not None:
            _ = output_cache | "WriteCache" >> analyzer_cache.WriteAnalysisCacheToFS(
                pipeline, str(cache_dir), list(keys.values())
            )
        run_pipeline(pipeline, "transform analysis")
    canonical_saved_model.canonicalize(storage.join(transform_fn_dir, "transform_fn"))
    return {
        "read": sorted(span for span, key in keys.items() if key in needed),
        "from_cache": sorted(span for span, key in keys.items() if key not in needed),
    }


def _spans_to_read(preprocessing_fn, adapter_config, keys: dict, input_cache) -> set:
    """The span keys whose data the analysis must read: all of them without a cache.

    Asking TFT which spans the cache covers traces ``preprocessing_fn`` once more (a full graph
    build, about a tenth of the stage's fixed cost); without a cache every span is read anyway.
    """
    if not input_cache:
        return set(keys.values())
    return set(
        analysis_graph_builder.get_analysis_dataset_keys(
            preprocessing_fn,
            TensorAdapter(adapter_config).OriginalTypeSpecs(),
            list(keys.values()),
            input_cache,
            force_tf_compat_v1=TF_COMPAT_V1,
        )
    )


def _span_key(span: str, pattern: str) -> analyzer_cache.DatasetKey:
    """Cache key of a span: its name plus a digest of its files, so changed data never hits."""
    digest = hashlib.sha256()
    for path in storage.glob(pattern):
        digest.update(storage.sha256(path).encode())
    return analyzer_cache.DatasetKey(f"{span}-{digest.hexdigest()[:16]}")


def _has_cache(cache_dir: Path | str) -> bool:
    return bool(storage.listdir(cache_dir))


def transform_splits(
    dataset: DatasetDefinition,
    split_patterns: dict[str, str],
    transform_fn_dir: str | Path,
    examples_dir: str | Path,
    temp_dir: str | Path,
    beam_args: list[str] | None = None,
) -> dict[str, int]:
    """Apply the stored ``transform_fn`` to every split; write TFRecord shards; count rows.

    A separate pipeline from :func:`analyze` on purpose: with the transform graph already on
    disk, read -> transform -> encode -> write fuse into one streaming stage, so memory stays
    flat however large the split (in one pipeline the runner buffers the whole raw split until
    the analysis is done).
    """
    adapter_config = tensor_adapter_config(dataset)
    pipeline = beam.Pipeline(options=pipeline_options(beam_args))
    with tft_context(temp_dir):
        transform_fn = pipeline | "ReadTransformFn" >> tft_beam.ReadTransformFn(
            str(transform_fn_dir)
        )
        for split, pattern in sorted(split_patterns.items()):
            raw = _read_counted(pipeline, split, pattern, adapter_config.arrow_schema)
            transformed = ((raw, adapter_config), transform_fn) | f"Transform[{split}]" >> (
                tft_beam.TransformDataset(output_record_batches=True)
            )
            _ = transformed[0] | f"Write[{split}]" >> WriteBatchesToTFRecord(examples_dir, split)
        result = run_pipeline(pipeline, "transform")
    for split in split_patterns:
        finalize_shards(examples_dir, split)
    return _row_counts(result, split_patterns)


def run_transform(
    dataset: DatasetDefinition,
    split_dirs: dict[str, Path | str],
    output_dir: str | Path,
    beam_args: list[str] | None = None,
    analysis_spans: dict[str, Path | str] | None = None,
    cache_dir: str | Path | None = None,
) -> TransformResult:
    """Analyze the training data, transform every split, and publish ``output_dir`` atomically.

    By default the analysis reads the ``train`` split; ``analysis_spans`` (name -> directory)
    analyzes several spans instead, with ``cache_dir`` reusing their cached analyzer results.
    """
    started = time.perf_counter()
    output_dir = str(output_dir)
    split_patterns = {split: _split_pattern(path) for split, path in split_dirs.items()}
    if ANALYZE_SPLIT not in split_patterns:
        raise ValueError(f"the transform stage needs a {ANALYZE_SPLIT!r} split to analyze")
    spans = (
        {ANALYZE_SPLIT: split_patterns[ANALYZE_SPLIT]}
        if analysis_spans is None
        else {span: _split_pattern(path) for span, path in analysis_spans.items()}
    )
    with (
        storage.staged_directory(output_dir) as staging,
        analysis_temp_dir(dataset, spans, staging) as temp_dir,
    ):
        analysis = analyze(dataset, spans, staging, temp_dir, beam_args, cache_dir)
        examples_dir = storage.join(staging, EXAMPLES_DIR)
        rows = transform_splits(dataset, split_patterns, staging, examples_dir, temp_dir, beam_args)
    patterns = {
        split: storage.join(output_dir, EXAMPLES_DIR, f"{split}-*.tfrecord.gz")
        for split in split_patterns
    }
    return TransformResult(output_dir, patterns, rows, time.perf_counter() - started, analysis)


@contextlib.contextmanager
def analysis_temp_dir(
    dataset: DatasetDefinition, span_patterns: dict[str, str], staging: str
) -> Iterator[str]:
    """TFT's temporary directory, named by what is analyzed rather than by the run.

    TFT names each vocabulary's lookup table after the file its analyzer wrote (the shared name
    ``hash_table_<path>_...`` lands in transform_fn and in the served model). Under the run's
    staging directory that path held the run id and a random suffix, so identical inputs gave
    different bytes and every served model carried a path of the machine that trained it. Here
    the path is ``<system temp>/pipeline-tft/<digest of dataset and span contents>``: the same
    for the same inputs on any run, held under a lock so two runs of the same inputs take turns.
    On an object store (Dataflow's workers need one) it stays under the staging prefix.
    """
    if storage.is_remote(staging):
        temp_dir = storage.join(staging, ".tft_tmp")
        try:
            yield temp_dir
        finally:
            storage.rmtree(temp_dir)
        return
    digest = hashlib.sha256(dataset.name.encode())
    for span, pattern in sorted(span_patterns.items()):
        digest.update(_span_key(span, pattern).key.encode())
    root = Path(tempfile.gettempdir()) / "pipeline-tft"
    root.mkdir(parents=True, exist_ok=True)
    temp_dir = root / digest.hexdigest()[:24]
    with open(root / f"{temp_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        shutil.rmtree(temp_dir, ignore_errors=True)  # an earlier attempt that was killed
        try:
            yield str(temp_dir)
        finally:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _row_counts(result, split_patterns: dict[str, str]) -> dict[str, int]:
    counters = result.metrics().query(
        beam.metrics.MetricsFilter().with_namespace(METRICS_NAMESPACE)
    )
    totals = {c.key.metric.name: c.committed for c in counters["counters"]}
    return {split: int(totals.get(f"rows_{split}", 0)) for split in split_patterns}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_dataset_argument(parser)
    parser.add_argument(
        "--split",
        action="append",
        required=True,
        metavar="NAME=DIR",
        help="a split directory of Parquet files; repeat per split (train is analyzed)",
    )
    parser.add_argument("--output", required=True, help="a path or gs:// URI")
    parser.add_argument(
        "--span",
        action="append",
        metavar="NAME=DIR",
        help="analyze these spans instead of the train split (repeat per span)",
    )
    parser.add_argument("--cache-dir", help="TFT analyzer cache shared across runs")
    parser.add_argument(
        "--parent-pid",
        type=int,
        help="end when this process ends (set by pipeline.run when it starts the transform early)",
    )
    args, beam_args = parser.parse_known_args(argv)
    if args.parent_pid is not None:
        die_with_parent(args.parent_pid)
    with exit_on_usage_error():
        dataset = dataset_from_args(args)
    splits = dict(item.split("=", 1) for item in args.split)
    spans = dict(item.split("=", 1) for item in args.span) if args.span else None
    result = run_transform(dataset, splits, args.output, beam_args, spans, args.cache_dir)
    print(json.dumps(result.to_manifest(), indent=2))


if __name__ == "__main__":
    main()
    exit_without_teardown(0)  # the run waits for this process's exit, not its teardown
