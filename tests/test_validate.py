"""Validation stage: real TFDV statistics on the Beam DirectRunner over small Parquet splits.

Splits are cut from the taxi sample (train 4,000 rows; eval/serving 1,000 each) and each fault is
injected into an otherwise clean copy, so every test can demand that exactly its fault is named.
Statistics are computed once per module.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2
from validation_data import find_sample, read_sample, split_file_schema, write_split

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline.datasets import get_dataset
from pipeline.definition import ColumnType
from pipeline.validation import (
    Check,
    Severity,
    SeverityConfig,
    ValidationFailed,
    check,
    compute_split_statistics,
    compute_statistics,
    load_schema,
    load_statistics,
    validate_splits,
    validate_statistics,
)
from pipeline.validation.cli import main
from pipeline.validation.comparators import quantile_bin_jsd

TAXI = get_dataset("taxi")

SAMPLE = find_sample()

_SCHEMA_TYPES = {
    ColumnType.INT64: schema_pb2.INT,
    ColumnType.TIMESTAMP: schema_pb2.INT,
    ColumnType.FLOAT64: schema_pb2.FLOAT,
    ColumnType.STRING: schema_pb2.BYTES,
}


# ---- data ----------------------------------------------------------------------------------


def _splits(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Clean splits plus one faulty copy per injected fault."""
    order = np.random.default_rng(0).permutation(len(frame))
    train = frame.iloc[order[:4000]].reset_index(drop=True)
    eval_ = frame.iloc[order[4000:5000]].reset_index(drop=True)
    serving = frame.iloc[order[5000:6000]].drop(columns=["tips"]).reset_index(drop=True)
    rows = np.arange(len(eval_))

    new_payment = serving.copy()
    new_payment.loc[rows % 20 == 0, "payment_type"] = "Bitcoin"
    missing_and_new = serving.drop(columns=["trip_miles"]).assign(driver_rating=4.5)
    null_fare = eval_.copy()
    null_fare.loc[rows % 50 == 0, "fare"] = np.nan
    string_seconds = eval_.assign(trip_seconds=eval_["trip_seconds"].astype("string"))
    drifted = eval_.copy()
    drifted.loc[(drifted["payment_type"] == "Cash") & (rows % 2 == 0), "payment_type"] = (
        "Credit Card"
    )
    return {
        "train": train,
        "eval": eval_,
        "serving": serving,
        "serving_new_payment": new_payment,
        "eval_fare_cents": eval_.assign(fare=eval_["fare"] * 100),
        "serving_missing_and_new": missing_and_new,
        "eval_null_fare": null_fare,
        "eval_string_seconds": string_seconds,
        "serving_skewed": serving.assign(fare=serving["fare"] * 1.5),
        "eval_drifted": drifted,
    }


@pytest.fixture(scope="module")
def split_patterns(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("validation_splits")
    contract = split_file_schema(TAXI)
    splits = _splits(read_sample(TAXI, SAMPLE))
    patterns = {}
    for name, frame in splits.items():
        # Faulty frames keep their own columns and types; the others follow the contract.
        conforming = frame.dtypes.equals(splits["train"].dtypes)
        patterns[name] = write_split(frame, root / name, contract if conforming else None)
    # NaN survives only if written as NaN (pandas would turn it into null): eval with NaN in
    # 2% of the fares (a required feature) and of the distances (an optional one).
    for name, column in (("eval_nan_fare", "fare"), ("eval_nan_miles", "trip_miles")):
        table = pq.read_table(split_patterns_dir(patterns["eval"]))
        values = table.column(column).to_numpy().astype(float)
        values[::50] = np.nan
        table = table.set_column(
            table.schema.get_field_index(column), column, pa.array(values, from_pandas=False)
        )
        (root / name).mkdir()
        pq.write_table(table, root / name / "part-00000.parquet")
        patterns[name] = str(root / name / "part-*.parquet")
    return patterns


def split_patterns_dir(pattern: str) -> str:
    return pattern.rsplit("/", 1)[0]


@pytest.fixture(scope="module")
def stats(
    split_patterns, tmp_path_factory
) -> dict[str, statistics_pb2.DatasetFeatureStatisticsList]:
    out = tmp_path_factory.mktemp("validation_stats")
    return {
        name: compute_statistics(pattern, out / f"{name}.pb")
        for name, pattern in split_patterns.items()
    }


@pytest.fixture(scope="module")
def schema() -> schema_pb2.Schema:
    return load_schema(TAXI)


def _kinds(report, feature: str) -> set[str]:
    return {a.kind for a in report.find(feature)}


# ---- the committed schema ------------------------------------------------------------------


def test_schema_agrees_with_dataset_definition(schema):
    by_name = {f.name: f for f in schema.feature}
    assert list(by_name) == [c.name for c in TAXI.row_columns]  # raw, then derived columns
    for column in TAXI.row_columns:
        feature = by_name[column.name]
        assert feature.type == _SCHEMA_TYPES[column.type], column.name
        required = feature.presence.min_fraction >= 1.0
        assert required == (not column.nullable), column.name
        serving_only_absent = "SERVING" in feature.not_in_environment
        assert serving_only_absent == (column.name in TAXI.unknown_at_serving), column.name
    assert set(schema.default_environment) == {"TRAINING", "SERVING"}


def test_schema_is_found_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_schema(TAXI).feature


# ---- clean data ----------------------------------------------------------------------------


def test_clean_data_has_no_anomalies(stats, schema):
    reports = [
        validate_statistics(stats["eval"], schema, "TRAINING", previous_stats=stats["train"]),
        validate_statistics(stats["train"], schema, "TRAINING", serving_stats=stats["serving"]),
        validate_statistics(stats["serving"], schema, "SERVING"),
    ]
    for report in reports:
        assert report.anomalies == (), report.describe()
        check(report)
    compared = {(m.feature, m.check) for r in reports for m in r.measurements}
    assert ("fare", Check.SKEW) in compared and ("payment_type", Check.DRIFT) in compared
    assert not any(m.exceeded for r in reports for m in r.measurements)


def test_tips_absent_in_serving_is_not_an_anomaly(stats, schema):
    assert not validate_statistics(stats["serving"], schema, "SERVING").find("tips")
    as_training = validate_statistics(stats["serving"], schema, "TRAINING")
    assert _kinds(as_training, "tips") == {"SCHEMA_MISSING_COLUMN"}


# ---- injected faults -----------------------------------------------------------------------


def test_new_payment_type_is_blocking(stats, schema):
    report = validate_statistics(stats["serving_new_payment"], schema, "SERVING")
    assert _kinds(report, "payment_type") == {"ENUM_TYPE_UNEXPECTED_STRING_VALUES"}
    assert [a.feature for a in report.anomalies] == ["payment_type"]
    with pytest.raises(ValidationFailed, match=r"payment_type .*Bitcoin \(~5%\)"):
        check(report)


def test_fare_in_cents_is_out_of_range(stats, schema):
    report = validate_statistics(stats["eval_fare_cents"], schema, "TRAINING")
    assert [a.feature for a in report.anomalies] == ["fare"]
    assert _kinds(report, "fare") == {"FLOAT_TYPE_BIG_FLOAT"}
    with pytest.raises(ValidationFailed) as failure:
        check(report)
    max_fare = _max_value(stats["eval_fare_cents"], "fare")
    assert "fare" in str(failure.value) and f"{max_fare:g}" in str(failure.value)


def _max_value(stats: statistics_pb2.DatasetFeatureStatisticsList, name: str) -> float:
    feature = next(f for f in stats.datasets[0].features if f.path.step[0] == name)
    return feature.num_stats.max


def test_missing_and_unexpected_columns(stats, schema):
    report = validate_statistics(stats["serving_missing_and_new"], schema, "SERVING")
    assert _kinds(report, "trip_miles") == {"SCHEMA_MISSING_COLUMN"}
    assert _kinds(report, "driver_rating") == {"SCHEMA_NEW_COLUMN"}
    assert {a.feature for a in report.blocking} == {"trip_miles", "driver_rating"}


def test_nulls_in_required_feature(stats, schema):
    report = validate_statistics(stats["eval_null_fare"], schema, "TRAINING")
    assert {a.feature for a in report.anomalies} == {"fare"}
    # The shape (a dense value in every row) breaks along with the presence fraction.
    assert _kinds(report, "fare") == {"FEATURE_TYPE_LOW_FRACTION_PRESENT", "INVALID_FEATURE_SHAPE"}
    with pytest.raises(ValidationFailed, match=r"fare .*0\.98"):
        check(report)


def test_nan_is_flagged_blocking_in_a_required_feature_a_warning_elsewhere(stats, schema):
    """TFDV counts NaN as a present value and reports nothing; the pipeline reads NaN as
    missing, so a source writing NaN for "missing" must be told."""
    fare = validate_statistics(stats["eval_nan_fare"], schema, "TRAINING")
    assert [a.kind for a in fare.blocking] == ["NAN_VALUES_IN_REQUIRED_FEATURE"]
    assert fare.blocking[0].feature == "fare" and "NaN" in fare.blocking[0].description
    miles = validate_statistics(stats["eval_nan_miles"], schema, "TRAINING")
    assert miles.passed
    assert [(a.feature, a.kind, a.severity.value) for a in miles.anomalies] == [
        ("trip_miles", "NAN_VALUES", "WARNING")
    ]
    assert not _kinds(validate_statistics(stats["eval"], schema, "TRAINING"), "trip_miles")


def test_string_where_a_number_belongs(stats, schema):
    report = validate_statistics(stats["eval_string_seconds"], schema, "TRAINING")
    assert [a.feature for a in report.blocking] == ["trip_seconds"]
    assert _kinds(report, "trip_seconds") == {"UNEXPECTED_DATA_TYPE"}
    with pytest.raises(ValidationFailed, match=r"trip_seconds .*Expected data of type: INT"):
        check(report)


def test_serving_skew_past_threshold_blocks(stats, schema):
    report = validate_statistics(
        stats["train"], schema, "TRAINING", serving_stats=stats["serving_skewed"]
    )
    (anomaly,) = report.anomalies
    assert (anomaly.feature, anomaly.kind, anomaly.check) == (
        "fare",
        "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH",
        Check.SKEW,
    )
    assert anomaly.severity is Severity.BLOCKING
    (measured,) = [m for m in report.measurements if m.feature == "fare"]
    assert measured.exceeded and measured.threshold == pytest.approx(0.03)
    with pytest.raises(ValidationFailed, match=rf"fare .*{measured.value:.4g}.*0\.03"):
        check(report)


def test_drift_past_threshold_warns_by_default_and_blocks_when_configured(stats, schema):
    args = (stats["eval_drifted"], schema, "TRAINING")
    report = validate_statistics(*args, previous_stats=stats["train"])
    (anomaly,) = report.anomalies
    assert (anomaly.feature, anomaly.kind, anomaly.check) == (
        "payment_type",
        "COMPARATOR_L_INFTY_HIGH",
        Check.DRIFT,
    )
    assert anomaly.severity is Severity.WARNING
    check(report)  # a warning does not stop the run

    strict = SeverityConfig.from_dict({"default": "BLOCKING"})
    with pytest.raises(ValidationFailed, match=r"payment_type .*above the threshold 0\.1"):
        check(validate_statistics(*args, previous_stats=stats["train"], severity=strict))


# ---- report, config, CLI, statistics files -------------------------------------------------


def test_manifest_is_json(stats, schema):
    report = validate_statistics(stats["eval_fare_cents"], schema, "TRAINING")
    manifest = json.loads(json.dumps(report.to_manifest()))
    assert manifest["passed"] is False and manifest["blocking"] == 1
    assert manifest["anomalies"][0]["severity"] == "BLOCKING"


def test_severity_rules_first_match_wins():
    config = SeverityConfig.from_dict(
        {
            "default": "WARNING",
            "rules": [
                {"feature": "company", "kind": "ENUM_*", "severity": "WARNING"},
                {"kind": "ENUM_*", "severity": "BLOCKING"},
            ],
        }
    )
    kind = "ENUM_TYPE_UNEXPECTED_STRING_VALUES"
    assert config.severity_of("company", kind, Check.SCHEMA) is Severity.WARNING
    assert config.severity_of("payment_type", kind, Check.SCHEMA) is Severity.BLOCKING
    assert config.severity_of("fare", "FLOAT_TYPE_BIG_FLOAT", Check.SCHEMA) is Severity.WARNING
    with pytest.raises(ValueError, match="unknown"):
        SeverityConfig.from_dict({"rule": []})


def test_cli_check_exit_status(stats, split_patterns, tmp_path, capsys):
    clean, faulty = tmp_path / "clean.pb", tmp_path / "faulty.pb"
    clean.write_bytes(stats["serving"].SerializeToString())
    faulty.write_bytes(stats["serving_new_payment"].SerializeToString())
    report_path = tmp_path / "report.json"

    assert main(["check", "--stats", str(clean), "--environment", "SERVING"]) == 0
    status = main(
        ["check", "--stats", str(faulty), "--environment", "SERVING", "--report", str(report_path)]
    )
    assert status == 3  # blocking anomalies: a verdict, not a crash
    assert "payment_type" in capsys.readouterr().out
    assert json.loads(report_path.read_text())["blocking"] == 1


def test_cli_infer_prints_difference(split_patterns, capsys):
    assert main(["infer", "--input", split_patterns["eval_string_seconds"]]) == 0
    out = capsys.readouterr().out
    assert "trip_seconds: type: INT -> BYTES" in out


def test_cli_infer_proposes_a_schema_shaped_like_the_reviewed_ones(split_patterns, tmp_path):
    """The candidate has the environments, keeps what a request cannot carry out of SERVING and
    leaves out the label the warehouse computes; with no reviewed schema yet it says so."""
    train = split_patterns["train"]
    candidate_path = tmp_path / "candidate.pbtxt"
    empty = tmp_path / "no-schemas"
    empty.mkdir()
    args = ["infer", "--input", train, "--output", str(candidate_path), "--schemas-dir", str(empty)]
    completed = _cli_process(*args)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "no reviewed schema at" in completed.stdout and "agrees" not in completed.stdout
    from tensorflow_data_validation import load_schema_text

    candidate = load_schema_text(str(candidate_path))
    assert list(candidate.default_environment) == ["TRAINING", "SERVING"]
    features = {f.name: f for f in candidate.feature}
    assert "big_tipper" not in features
    assert list(features["tips"].not_in_environment) == ["SERVING"]
    assert not features["fare"].not_in_environment


def test_cli_infer_refuses_a_csv_naming_what_it_reads(tmp_path):
    csv = tmp_path / "trips.csv"
    csv.write_text("fare,tips\n1.0,0.1\n")
    completed = _cli_process("infer", "--input", str(csv))
    assert completed.returncode == 2
    assert "matches no Parquet split files" in completed.stderr
    assert "python -m pipeline.warehouse --dataset taxi" in completed.stderr


def _cli_process(*args: str):
    import subprocess

    from tests.conftest import PYTHON, REPO_ROOT, subprocess_env

    return subprocess.run(
        [PYTHON, "-m", "pipeline.validation", *args],
        capture_output=True, text=True, cwd=REPO_ROOT, env=subprocess_env(), check=False,
    )  # fmt: skip


def test_statistics_file_is_published_whole(stats, split_patterns, tmp_path):
    output = tmp_path / "stats" / "serving.pb"
    compute_statistics(split_patterns["serving"], output)
    assert load_statistics(output).datasets[0].num_examples == 1000
    assert [p.name for p in output.parent.iterdir()] == ["serving.pb"]


def test_a_killed_attempts_temporary_files_are_removed_by_the_next(split_patterns, tmp_path):
    """A SIGKILL mid-write leaves Beam's beam-temp-* files in the attempt's staging directory."""
    output = tmp_path / "stats" / "serving.pb"
    leftover = output.parent / ".serving.pb.staging-0123456789ab-x" / "beam-temp-serving.pb-1"
    leftover.mkdir(parents=True)
    (leftover / "3405ac73.serving.pb.tmp").write_bytes(b"partial")
    compute_statistics(split_patterns["serving"], output)
    assert [p.name for p in output.parent.iterdir()] == ["serving.pb"]


def test_several_splits_in_one_pipeline_give_each_its_own_statistics(
    stats, split_patterns, tmp_path
):
    names = ["train", "serving_skewed"]
    outputs = {name: str(tmp_path / "stats" / f"{name}.pb") for name in names}
    computed = compute_split_statistics({outputs[n]: split_patterns[n] for n in names})
    assert set(computed) == set(outputs.values())
    for name in names:
        # Each split's proto equals the one its own pipeline computed, and is published whole.
        assert computed[outputs[name]] == stats[name] == load_statistics(outputs[name])
    assert sorted(p.name for p in (tmp_path / "stats").iterdir()) == sorted(
        f"{n}.pb" for n in names
    )


def test_missing_input_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        compute_statistics(str(tmp_path / "nothing-here" / "*.parquet"), tmp_path / "s.pb")


def test_validate_splits_runs_the_standard_checks(stats, schema):
    reports = validate_splits(
        {
            "train": stats["train"],
            "eval": stats["eval_drifted"],
            "serving": stats["serving_skewed"],
        },
        schema,
    )
    assert list(reports) == ["train", "eval", "serving", "train vs serving"]
    assert reports["train"].anomalies == reports["serving"].anomalies == ()
    assert [(a.feature, a.check) for a in reports["eval"].anomalies] == [
        ("payment_type", Check.DRIFT)
    ]
    assert [(a.feature, a.check) for a in reports["train vs serving"].anomalies] == [
        ("fare", Check.SKEW)
    ]


def test_html_report_is_self_contained(stats, tmp_path, capsys):
    files = {}
    for split, name in (("train", "train"), ("eval", "eval_fare_cents"), ("serving", "serving")):
        files[split] = tmp_path / f"{split}.pb"
        files[split].write_bytes(stats[name].SerializeToString())
    output = tmp_path / "report" / "validation.html"
    argv = ["report", "--output", str(output), "--title", "Run <42>"]
    for split, path in files.items():
        argv += ["--stats", f"{split}={path}"]

    assert main(argv) == 0
    page = output.read_text()
    assert "<script" not in page and "http" not in page and "<link" not in page
    assert "Run &lt;42&gt;" in page
    assert "FLOAT_TYPE_BIG_FLOAT" in page and "train vs serving" in page
    assert "JENSEN_SHANNON_DIVERGENCE" in page and "L_INFTY" in page
    assert [p.name for p in output.parent.iterdir()] == ["validation.html"]


# ---- units ---------------------------------------------------------------------------------


def test_quantile_bin_jsd_bounds():
    def histogram(edges: list[float]) -> statistics_pb2.Histogram:
        result = statistics_pb2.Histogram(type=statistics_pb2.Histogram.QUANTILES)
        for low, high in itertools.pairwise(edges):
            result.buckets.add(low_value=low, high_value=high, sample_count=10)
        return result

    base = histogram([0, 1, 2, 3, 4])
    assert quantile_bin_jsd(base, histogram([0, 1, 2, 3, 4])) == pytest.approx(0.0)
    shifted = quantile_bin_jsd(base, histogram([0, 1.5, 3, 4.5, 6]))
    # Mass beyond the baseline's range all lands in its top bin, which holds 1/4 of the baseline.
    beyond = quantile_bin_jsd(base, histogram([10, 11, 12]))
    assert 0 < shifted < beyond < 1
