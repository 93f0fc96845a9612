"""All vocabularies in one analyzer (``pipeline.vocabularies``) against TFT's own, file for file.

The same ``preprocessing_fn`` is analyzed twice by a real TFT ``AnalyzeDataset`` on the
DirectRunner: once with one ``tft.compute_and_apply_vocabulary`` per feature (TFT's reference),
once with every vocabulary counted in the one analyzer the transform stage uses. The data has
what a vocabulary must get right: ties in frequency, a frequency threshold, top-k cuts, integer
tokens (ordered as decimal strings), empty strings and line breaks that never become tokens,
tokens of a delimited column, and a vocabulary that keeps nothing.
"""

from __future__ import annotations

import apache_beam as beam
import pytest
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from pipeline.definition import (
    BinaryLabel,
    Column,
    ColumnType,
    DatasetDefinition,
    Feature,
    ModelPart,
    SplitSettings,
)
from pipeline.raw_schema import raw_feature_spec
from pipeline.transform import tft_context
from pipeline.vocabularies import TokenCountsCoder, make_analyzer
from transforms import kinds
from transforms.preprocessing import make_preprocessing_fn

pytestmark = pytest.mark.slow

BOTH, DEEP = ModelPart.BOTH, ModelPart.DEEP
STRING, INT, FLOAT = ColumnType.STRING, ColumnType.INT64, ColumnType.FLOAT64


def _word(name: str, kind: kinds.Kind) -> Feature:
    return Feature(name, "word", kind, BOTH, default="")


DATASET = DatasetDefinition(
    name="vocabularies",
    table="vocabularies.rows",
    columns=(
        Column("row", INT),
        Column("word", STRING),
        Column("area", INT),
        Column("tags", STRING),
        Column("score", FLOAT),
    ),
    label=BinaryLabel("high", "score", ">", 0.5),
    features=(
        _word("word_all", kinds.Vocabulary(num_oov_buckets=2)),
        _word("word_top3", kinds.Vocabulary(top_k=3)),
        _word("word_frequent", kinds.Vocabulary(frequency_threshold=4, num_oov_buckets=1)),
        _word("word_none", kinds.Vocabulary(frequency_threshold=1000, num_oov_buckets=1)),
        Feature("area_top", "area", kinds.Vocabulary(top_k=4, num_oov_buckets=1), BOTH),
        Feature("word_onehot", "word", kinds.OneHot(top_k=2), DEEP, default=""),
        Feature("tags_multi", "tags", kinds.MultiHot(top_k=4, delimiter="|"), DEEP, default=""),
    ),
    split=SplitSettings(key_columns=("row",)),
    unknown_at_serving=("score",),
)
# Ties at several counts ("b"/"c"/"d" 3 times each, 9 and 10 twice), empty strings, a line
# break inside a value, and nulls.
WORDS = ["a"] * 5 + ["b", "c", "d"] * 3 + ["", "two\nlines", "ends\r", None, "é", "Z", "Z"]
AREAS = [10, 9, 9, 10, 100, 2, 2, 2, None, 77, 1, 1, 1, 3, 3, 3, 8, 8, 8, 8, 5, 5, 5]
TAGS = ["x|y", "y", "", "z| x", "x|x", "w|", None, "y|z|w", "v"]


def _rows() -> list[dict]:
    rows = []
    for i in range(len(WORDS) * 2):
        word, area, tags = WORDS[i % len(WORDS)], AREAS[i % len(AREAS)], TAGS[i % len(TAGS)]
        rows.append(
            {
                "row": [i],
                "word": [] if word is None else [word.encode()],
                "area": [] if area is None else [area],
                "tags": [] if tags is None else [tags.encode()],
                "score": [i / 50],
            }
        )
    return rows


def _vocabulary_files(preprocessing_fn, tmp_path, rows: list[dict]) -> dict[str, bytes]:
    spec = raw_feature_spec(DATASET)
    spec.pop("high", None)
    metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(spec))
    output = tmp_path / "transform_output"
    with beam.Pipeline(runner="DirectRunner") as pipeline, tft_context(tmp_path / "tmp"):
        data = pipeline | beam.Create(rows)
        transform_fn = (data, metadata) | tft_beam.AnalyzeDataset(preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(str(output))
    assets = output / "transform_fn" / "assets"
    files = {path.name: path.read_bytes() for path in assets.iterdir()}
    files["schema"] = (output / "transformed_metadata" / "schema.pbtxt").read_bytes()
    return files


def test_one_analyzer_writes_what_one_tft_vocabulary_per_feature_writes(tmp_path):
    rows = _rows()
    reference = _vocabulary_files(make_preprocessing_fn(DATASET), tmp_path / "tft", rows)
    combined = _vocabulary_files(
        make_preprocessing_fn(DATASET, make_analyzer), tmp_path / "one", rows
    )
    names = {f"{f.name}_vocab" for f in DATASET.features}
    assert names <= set(reference)
    assert set(combined) == set(reference)
    for name in sorted(reference):
        assert combined[name] == reference[name], name
    # The cases the data is there for did occur.
    assert reference["word_none_vocab"].count(b"\n") == 1  # the placeholder token only
    assert reference["word_top3_vocab"] == b"a\nd\nc\n"  # ties: by their bytes, largest first
    assert b"two" not in reference["word_all_vocab"] and b"ends" not in reference["word_all_vocab"]


def test_no_rows_give_the_placeholder_files_tft_gives(tmp_path):
    reference = _vocabulary_files(make_preprocessing_fn(DATASET), tmp_path / "tft", [])
    combined = _vocabulary_files(
        make_preprocessing_fn(DATASET, make_analyzer), tmp_path / "one", []
    )
    assert combined == reference
    assert reference["word_all_vocab"] == b"49d0cd50-04bb-48c0-bc6f-5b575dce351a\n"
    assert reference["area_top_vocab"] == b"-1\n"


def test_token_counts_survive_the_cache_coder():
    counts = [{b"a": 3, "é".encode(): 2, b"\xff\x00": 1}, {7: 4, -2: 1}, {}]
    coder = TokenCountsCoder()
    encoded = coder.encode_cache(counts)
    assert coder.decode_cache(encoded) == counts
    assert coder.encode_cache(coder.decode_cache(encoded)) == encoded
