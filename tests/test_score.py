"""Batch scoring: a whole table through the export on Beam, back into the warehouse atomically."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from pipeline.data import ensure_warehouse
from pipeline.export import EXAMPLES_INPUT, SERVING_SIGNATURE
from pipeline.predict import raw_examples
from pipeline.score import ScoreConfig, score_table
from pipeline.score import __main__ as score_cli
from pipeline.score.bigquery_tables import BigQueryScoringTables
from pipeline.score.duckdb_tables import publish
from pipeline.score.model import ExportModelHandler
from pipeline.warehouse.identifiers import TableRef
from pipeline.warehouse.query import reference_key
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

DIRECT = ["--runner=DirectRunner"]
TABLE = "scores.eval_predictions"


def _table(db: Path, table: str = TABLE) -> dict[str, dict]:
    """The prediction table by row key."""
    with duckdb.connect(str(db), read_only=True) as connection:
        rows = connection.execute(f"SELECT * FROM {table}").fetch_arrow_table().to_pylist()
    return {row["row_key"]: row for row in rows}


def _schema_tables(db: Path, schema: str = "scores") -> list[str]:
    with duckdb.connect(str(db), read_only=True) as connection:
        found = connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ?", [schema]
        ).fetchall()
    return sorted(name for (name,) in found)


def _split_config(taxi, export_dir, split_dir, db, **overrides) -> ScoreConfig:
    fields = dict(
        definition=taxi, model=str(export_dir), split_dir=split_dir, output_db=db,
        output_table=TABLE, batch_size=128,
    )  # fmt: skip
    return ScoreConfig(**{**fields, **overrides})


@pytest.fixture(scope="module")
def export_dir(trained_export) -> Path:
    return Path(trained_export[1].export_dir)


@pytest.fixture(scope="module")
def scored_eval(taxi, export_dir, small_splits, tmp_path_factory):
    """The eval split scored on the DirectRunner into a DuckDB file."""
    db = tmp_path_factory.mktemp("scores") / "predictions.duckdb"
    result = score_table(_split_config(taxi, export_dir, small_splits["eval"], db), DIRECT)
    return result, db


def _expected(taxi, export_dir: Path, split_dir: Path) -> dict[str, tuple[float, int]]:
    """serving_default in this process on the split's rows, by the split's row key."""
    rows = pq.read_table(next(split_dir.glob("*.parquet"))).to_pylist()
    examples, _ = raw_examples(taxi, split_dir, len(rows))
    outputs = tf.saved_model.load(str(export_dir)).signatures[SERVING_SIGNATURE](
        **{EXAMPLES_INPUT: tf.constant(examples)}
    )
    probabilities = outputs["probabilities"].numpy()
    classes = outputs["classes"].numpy()
    keys = [reference_key(taxi, taxi.split.key_columns, row) for row in rows]
    assert len(set(keys)) == len(keys)
    return {k: (float(p), int(c)) for k, p, c in zip(keys, probabilities, classes, strict=True)}


def test_batch_predictions_of_a_split_equal_the_exports_own(
    scored_eval, taxi, export_dir, small_splits
):
    result, db = scored_eval
    table = _table(db)
    expected = _expected(taxi, export_dir, small_splits["eval"])
    assert result.input_rows == result.rows_written == len(table) == len(expected) == 600
    assert table.keys() == expected.keys()  # the row key is the split's key of each row
    for key, (probability, klass) in expected.items():
        assert table[key]["probabilities"] == pytest.approx(probability, rel=1e-6)
        assert table[key]["classes"] == klass
    assert {row["model_version"] for row in table.values()} == {1} == {result.model_version}
    assert list(next(iter(table.values()))) == [
        "row_key",
        "model_version",
        "classes",
        "probabilities",
    ]


def test_batch_predictions_equal_the_rest_servers(scored_eval, taxi, export_dir, small_splits):
    from pipeline.serving.models import ModelRegistry
    from pipeline.serving.service import ServingService

    registry = ModelRegistry(export_dir.parent)
    registry.refresh()
    service = ServingService("taxi", taxi, registry)
    examples, _ = raw_examples(taxi, small_splits["eval"], 5)
    body = {"instances": [{"b64": base64.b64encode(e).decode()} for e in examples]}
    served = json.loads(service.predict("taxi", None, json.dumps(body).encode()))["predictions"]
    rows = pq.read_table(next(small_splits["eval"].glob("*.parquet"))).slice(0, 5).to_pylist()
    table = _table(scored_eval[1])
    for row, prediction in zip(rows, served, strict=True):
        scored = table[reference_key(taxi, taxi.split.key_columns, row)]
        assert scored["probabilities"] == pytest.approx(prediction["probabilities"], rel=1e-6)
        assert scored["classes"] == prediction["classes"]


def test_a_model_base_scores_with_its_newest_version_and_records_it(
    taxi, export_dir, small_splits, tmp_path
):
    base = tmp_path / "models" / "taxi"
    for version in (3, 12):
        shutil.copytree(export_dir, base / str(version))
    shutil.copytree(export_dir, base / ".13.staging")  # a push in flight is never read
    db = tmp_path / "p.duckdb"
    result = score_table(_split_config(taxi, base, small_splits["test"], db), DIRECT)
    assert result.model_version == 12
    assert result.export_dir == str(base / "12")
    assert {row["model_version"] for row in _table(db).values()} == {12}


def test_a_failed_scoring_run_leaves_the_previous_table_untouched(
    scored_eval, taxi, export_dir, small_splits, tmp_path, monkeypatch
):
    _, scored_db = scored_eval
    db = tmp_path / "p.duckdb"
    shutil.copy(scored_db, db)
    before = _table(db)
    calls = []
    run_inference = ExportModelHandler.run_inference

    def fail_on_the_third_batch(self, batch, model, inference_args=None):
        calls.append(batch.num_rows)
        if len(calls) == 3:
            raise RuntimeError("the model server's disk went away")
        return run_inference(self, batch, model, inference_args)

    monkeypatch.setattr(ExportModelHandler, "run_inference", fail_on_the_third_batch)
    config = _split_config(taxi, export_dir, small_splits["train"], db, model_version=7)
    with pytest.raises(Exception, match="disk went away"):
        score_table(config, DIRECT)
    assert len(calls) == 3  # two batches were scored (and written to staging) before it failed
    assert _table(db) == before
    assert _schema_tables(db) == ["eval_predictions"]  # no staging table left behind


def test_publishing_checks_the_row_count_inside_the_transaction(tmp_path):
    db = tmp_path / "p.duckdb"
    with duckdb.connect(str(db)) as connection:
        connection.execute("CREATE SCHEMA scores")
        connection.execute("CREATE TABLE scores.t AS SELECT 'a' AS row_key, 1 AS model_version")
        connection.execute(
            f"COPY (SELECT 'b' AS row_key, 2 AS model_version) TO '{tmp_path}/s.parquet'"
        )
    with pytest.raises(RuntimeError, match="1 predictions for 2 input rows"):
        publish(db, TableRef("scores", "t"), [str(tmp_path / "s.parquet")], expected_rows=2)
    assert _table(db, "scores.t") == {"a": {"row_key": "a", "model_version": 1}}
    assert _schema_tables(db) == ["t"]
    publish(db, TableRef("scores", "t"), [str(tmp_path / "s.parquet")], expected_rows=1)
    assert _table(db, "scores.t") == {"b": {"row_key": "b", "model_version": 2}}


def test_the_cli_scores_a_warehouse_interval_into_the_warehouse(taxi, export_dir, tmp_path, capsys):
    db = tmp_path / "warehouse.duckdb"
    shutil.copy(ensure_warehouse(taxi, REPO_ROOT / "data"), db)
    window = ["--start", "2015-01-01", "--end", "2015-04-01"]
    code = score_cli.main(
        ["--model", str(export_dir), "--db", str(db), "--key-column", "trip_start_timestamp",
         "--key-column", "company", *window, "--runner=DirectRunner"]
    )  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    with duckdb.connect(str(db), read_only=True) as connection:
        (wanted,) = connection.execute(
            "SELECT COUNT(*) FROM chicago_taxi_trips.taxi_trips WHERE trip_start_timestamp >= "
            "'2015-01-01' AND trip_start_timestamp < '2015-04-01'"
        ).fetchone()
        scored = connection.execute(
            "SELECT * FROM chicago_taxi_trips.taxi_trips_predictions"
        ).fetch_arrow_table()
    assert summary["table"] == "chicago_taxi_trips.taxi_trips_predictions"
    assert summary["input_rows"] == summary["rows_written"] == scored.num_rows == wanted > 0
    assert scored.column_names[:4] == [
        "row_key",
        "trip_start_timestamp",
        "company",
        "model_version",
    ]
    first = scored.slice(0, 1).to_pylist()[0]
    assert first["row_key"] == reference_key(taxi, ("trip_start_timestamp", "company"), first)


def test_an_empty_selection_still_publishes_a_table_with_the_outputs_columns(
    taxi, export_dir, tmp_path
):
    db = tmp_path / "warehouse.duckdb"
    shutil.copy(ensure_warehouse(taxi, REPO_ROOT / "data"), db)
    config = ScoreConfig(definition=taxi, model=str(export_dir), warehouse=db, start="2030-01-01")
    result = score_table(config, DIRECT)
    assert result.input_rows == result.rows_written == 0
    with duckdb.connect(str(db), read_only=True) as connection:
        table = connection.execute(
            "SELECT * FROM chicago_taxi_trips.taxi_trips_predictions"
        ).fetch_arrow_table()
    assert table.num_rows == 0
    assert table.column_names == ["row_key", "model_version", "classes", "probabilities"]


def test_scoring_on_the_portable_runner_writes_the_direct_runners_predictions(
    scored_eval, taxi, export_dir, small_splits, tmp_path, portable_cluster
):
    db = tmp_path / "p.duckdb"
    config = _split_config(taxi, export_dir, small_splits["eval"], db)
    score_table(config, portable_cluster.beam_args())
    ours, direct = _table(db), _table(scored_eval[1])
    assert ours.keys() == direct.keys()
    for key, row in direct.items():
        assert ours[key]["classes"] == row["classes"]
        assert ours[key]["probabilities"] == pytest.approx(row["probabilities"], rel=1e-6)


# ---- BigQuery, up to the wire --------------------------------------------------------------


class _Job:
    def __init__(self, **fields) -> None:
        self.__dict__.update(fields)

    def result(self):
        return self


class FakeBigQueryClient:
    """Records every call the scoring tables make; answers row counts."""

    def __init__(self, loaded_rows: int) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.loaded_rows = loaded_rows

    def query(self, sql, job_config=None, location=None, job_id_prefix=None):
        self.calls.append(("query", {"sql": sql, "config": job_config, "location": location}))
        return _Job(total_rows=42)

    def load_table_from_uri(self, uri, table, job_config=None, location=None, job_id_prefix=None):
        self.calls.append(("load", {"uri": uri, "table": table, "config": job_config}))
        return _Job(output_rows=self.loaded_rows)

    def copy_table(self, source, destination, job_config=None, location=None, job_id_prefix=None):
        self.calls.append(("copy", {"source": source, "table": destination, "config": job_config}))
        return _Job()

    def delete_table(self, table, not_found_ok=False):
        self.calls.append(("delete", {"table": table, "not_found_ok": not_found_ok}))


def _bigquery_tables(client) -> BigQueryScoringTables:
    output = TableRef("scoring", "taxi_trips_predictions", project="taxi-prod")
    return BigQueryScoringTables(output, "EU", {"stage": "batch_scoring"}, client)


def test_bigquery_exports_the_score_query_with_its_parameters(taxi):
    from pipeline.warehouse.query import score_input_query

    client = FakeBigQueryClient(loaded_rows=42)
    config = ScoreConfig(
        definition=taxi,
        model="gs://taxi-artifacts/models/taxi",
        engine="bigquery",
        bq_project="taxi-prod",
        bq_location="EU",
        staging_uri="gs://taxi-artifacts/scoring",
        start="2024-01-01",
        end="2024-01-02",
    )
    query = score_input_query(config.split_config())
    pattern, rows = _bigquery_tables(client).export_input(
        query, "gs://taxi-artifacts/scoring/run1/input"
    )
    assert (pattern, rows) == ("gs://taxi-artifacts/scoring/run1/input/part-*.parquet", 42)
    (_, select), (_, export) = client.calls
    assert "FROM `taxi-prod`.`chicago_taxi_trips`.`taxi_trips`" in select["sql"]
    assert "_key AS row_key" in select["sql"]
    params = {p.name: p.value.isoformat() for p in select["config"].query_parameters}
    assert params == {"start": "2024-01-01T00:00:00+00:00", "end": "2024-01-02T00:00:00+00:00"}
    assert select["config"].destination.table_id == "taxi_trips_predictions__input"
    assert select["config"].write_disposition == "WRITE_TRUNCATE"
    assert select["location"] == "EU"
    assert "EXPORT DATA" in export["sql"]
    assert "uri = 'gs://taxi-artifacts/scoring/run1/input/part-*.parquet'" in export["sql"]
    assert "`taxi-prod`.`scoring`.`taxi_trips_predictions__input`" in export["sql"]


def test_bigquery_publishes_through_a_checked_staging_table():
    client = FakeBigQueryClient(loaded_rows=42)
    _bigquery_tables(client).publish(
        "gs://taxi-artifacts/scoring/run1/predictions/part-*.parquet", 42
    )
    kinds = [kind for kind, _ in client.calls]
    assert kinds == ["load", "copy", "delete", "delete"]
    load, copy = client.calls[0][1], client.calls[1][1]
    assert load["table"] == "taxi-prod.scoring.taxi_trips_predictions__staging"
    assert load["config"].source_format == "PARQUET"
    assert load["config"].write_disposition == "WRITE_TRUNCATE"
    assert load["config"].parquet_options.enable_list_inference is True
    assert copy["source"] == load["table"]
    assert copy["table"] == "taxi-prod.scoring.taxi_trips_predictions"
    assert copy["config"].write_disposition == "WRITE_TRUNCATE"
    assert {c[1]["table"] for c in client.calls[2:]} == {
        "taxi-prod.scoring.taxi_trips_predictions__staging",
        "taxi-prod.scoring.taxi_trips_predictions__input",
    }


def test_bigquery_never_copies_a_short_load_onto_the_output_table():
    client = FakeBigQueryClient(loaded_rows=41)
    with pytest.raises(RuntimeError, match="loaded 41 predictions for 42 input rows"):
        _bigquery_tables(client).publish("gs://taxi-artifacts/p/part-*.parquet", 42)
    assert [kind for kind, _ in client.calls] == ["load", "delete", "delete"]


class _ThreeOutputs(tf.Module):
    """A stand-in export with a multi-class and a regression head: one column per output."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)])
    def serve(self, examples):
        spec = {"fare": tf.io.FixedLenFeature([1], tf.float32)}
        fare = tf.io.parse_example(examples, spec)["fare"][:, 0]
        logits = tf.stack([fare / 10.0, fare / 20.0, tf.zeros_like(fare)], axis=1)
        names = tf.constant(["high", "mid", "low"])
        return {
            "predictions": 2.0 * fare,
            "probabilities": tf.nn.softmax(logits),
            "classes": tf.gather(names, tf.argmax(logits, axis=1)),
        }


def test_every_output_of_the_signature_becomes_a_column(taxi, small_splits, tmp_path):
    toy = _ThreeOutputs()
    tf.saved_model.save(toy, str(tmp_path / "toy" / "5"), signatures={SERVING_SIGNATURE: toy.serve})
    db = tmp_path / "p.duckdb"
    config = _split_config(taxi, tmp_path / "toy" / "5", small_splits["eval"], db)
    assert score_table(config, DIRECT).model_version == 5
    table = _table(db)
    rows = pq.read_table(next(small_splits["eval"].glob("*.parquet"))).to_pylist()
    assert len(table) == len(rows)
    for row in rows:
        scored = table[reference_key(taxi, taxi.split.key_columns, row)]
        fare = np.float32(row["fare"])
        logits = np.array([fare / 10, fare / 20, 0.0])
        softmax = np.exp(logits) / np.exp(logits).sum()
        assert scored["predictions"] == pytest.approx(2 * fare, rel=1e-6)
        assert scored["probabilities"] == pytest.approx(softmax.tolist(), rel=1e-5)
        assert scored["classes"] == ["high", "mid", "low"][int(np.argmax(logits))]
