"""Serving-log validation: real request-log TFRecords -> TFDV on Beam -> SERVING checks and skew.

Training statistics come from a Parquet split of the taxi sample (4,000 rows); each log holds
1,000 other rows of the sample without the label, clean or with one injected change: either
encoded as raw ``tf.Example``s directly, or sent as JSON through a real ``pipeline.serving``
process (missing values left out, sent as ``null``, or as ``serving_raw`` markers) and logged by
it, which is what production traffic looks like.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from validation_data import (
    find_sample,
    read_sample,
    split_file_schema,
    write_request_log,
    write_split,
)

import pipeline  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from pipeline.datasets import get_dataset
from pipeline.export import RAW_SIGNATURE, raw_instances
from pipeline.validation import (
    Check,
    Severity,
    ValidationFailed,
    check,
    check_serving_logs,
    cli,
    compute_statistics,
    load_schema,
    load_statistics,
)
from pipeline.validation.cli import (
    EXIT_BLOCKING_ANOMALIES,
    EXIT_CRASH,
    EXIT_NO_REQUEST_LOGS,
    EXIT_STATUS_HELP,
    EXIT_USAGE,
    main,
)
from tests.conftest import PYTHON, REPO_ROOT, subprocess_env
from tests.serving_client import MODEL, running_server, wait_for

TAXI = get_dataset("taxi")

SAMPLE = find_sample()

JSD = "COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH"


def _logs(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    order = np.random.default_rng(0).permutation(len(frame))
    serving = frame.iloc[order[5000:6000]].drop(columns=["tips"]).reset_index(drop=True)
    rows = np.arange(len(serving))
    new_payment = serving.copy()
    new_payment.loc[rows % 20 == 0, "payment_type"] = "Bitcoin"
    payment_mix = serving.copy()
    payment_mix.loc[(serving["payment_type"] == "Cash") & (rows % 2 == 0), "payment_type"] = (
        "Credit Card"
    )
    return {
        "clean": serving,
        "fare_x1.5": serving.assign(fare=serving["fare"] * 1.5),
        "payment_mix": payment_mix,
        "new_payment": new_payment,
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving_logs")
    frame = read_sample(TAXI, SAMPLE)
    order = np.random.default_rng(0).permutation(len(frame))
    train = frame.iloc[order[:4000]].reset_index(drop=True)
    pattern = write_split(train, root / "train", split_file_schema(TAXI))
    train_stats = compute_statistics(pattern, root / "stats" / "train.pb")
    log_dirs = {
        name: write_request_log(logged, root / "logs" / name, TAXI)
        for name, logged in _logs(frame).items()
    }
    return root / "stats" / "train.pb", train_stats, log_dirs


@pytest.fixture(scope="module")
def schema():
    return load_schema(TAXI)


@pytest.fixture(scope="module")
def stats_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("serving_stats")


@pytest.fixture(scope="module")
def reports(data, schema, stats_dir):
    _, train_stats, log_dirs = data
    return {
        name: check_serving_logs(
            directory, train_stats, schema, output_stats=stats_dir / f"{name}.pb"
        )
        for name, directory in log_dirs.items()
    }


def _found(report) -> list[tuple[str, str, Check]]:
    return [(a.feature, a.kind, a.check) for a in report.anomalies]


def test_clean_logs_pass(reports, stats_dir):
    report = reports["clean"]
    assert report.environment == "SERVING"
    assert report.anomalies == (), report.describe()
    check(report)
    skew = {m.feature for m in report.measurements if m.check is Check.SKEW}
    assert {"fare", "trip_miles", "payment_type", "company"} <= skew
    assert not any(m.exceeded for m in report.measurements)

    kept = load_statistics(stats_dir / "clean.pb").datasets[0]
    assert kept.num_examples == 1000
    assert "tips" not in {f.path.step[0] for f in kept.features}


def test_fare_shift_is_blocking_skew(reports):
    report = reports["fare_x1.5"]
    assert _found(report) == [("fare", JSD, Check.SKEW)]
    assert report.anomalies[0].severity is Severity.BLOCKING
    with pytest.raises(ValidationFailed, match=r"fare .*above the threshold 0\.03"):
        check(report)


def test_payment_mix_change_is_skew(reports):
    report = reports["payment_mix"]
    assert _found(report) == [("payment_type", "COMPARATOR_L_INFTY_HIGH", Check.SKEW)]
    assert not report.passed


def test_new_payment_type_is_caught(reports):
    report = reports["new_payment"]
    assert _found(report) == [("payment_type", "ENUM_TYPE_UNEXPECTED_STRING_VALUES", Check.SCHEMA)]
    with pytest.raises(ValidationFailed, match=r"payment_type .*Bitcoin"):
        check(report)


def test_absent_or_empty_log_dir_is_a_clear_error(data, schema, tmp_path, capsys):
    train_path, train_stats, _ = data
    with pytest.raises(FileNotFoundError, match=r"serving log directory .*nowhere.* not exist"):
        check_serving_logs(tmp_path / "nowhere", train_stats, schema)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".requests-partial.tfrecord.tmp").write_bytes(b"")  # a file still being written
    with pytest.raises(FileNotFoundError, match=r"holds no request logs \(requests-\*\.tfrecord\)"):
        check_serving_logs(empty, train_stats, schema)

    argv = ["serving-logs", "--logs", str(tmp_path / "nowhere"), "--train-stats", str(train_path)]
    assert main(argv) == EXIT_NO_REQUEST_LOGS
    assert "nowhere" in capsys.readouterr().err
    argv = ["serving-logs", "--logs", str(empty), "--train-stats", str(train_path)]
    assert main(argv) == EXIT_NO_REQUEST_LOGS
    assert "holds no request logs" in capsys.readouterr().err


def test_cli_serving_logs(data, tmp_path, capsys):
    train_path, _, log_dirs = data
    base = ["serving-logs", "--train-stats", str(train_path)]

    assert main([*base, "--logs", str(log_dirs["clean"])]) == 0
    assert "no anomalies (SERVING)" in capsys.readouterr().out

    report, html, stats = tmp_path / "r.json", tmp_path / "r.html", tmp_path / "s.pb"
    argv = [*base, "--logs", str(log_dirs["fare_x1.5"]), "--report", str(report)]
    argv += ["--html", str(html), "--output-stats", str(stats)]
    assert main(argv) == EXIT_BLOCKING_ANOMALIES
    out, err = capsys.readouterr()
    assert "checked 1000 logged requests" in out and f"fare [{JSD}, skew]" in out
    assert f"1 blocking anomalies (SERVING):\n  fare [skew] {JSD}: " in err
    manifest = json.loads(report.read_text())
    assert manifest["blocking"] == 1 and manifest["anomalies"][0]["feature"] == "fare"
    page = html.read_text()
    assert "train vs serving" in page and JSD in page
    assert stats.is_file()


def _validate_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "pipeline.validation", *args],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cli_exit_statuses_tell_a_verdict_from_a_crash(data, tmp_path):
    """The statuses the DAG's skew-check task acts on, from a real ``python -m`` process: only a
    crash may exit 1 (retried); usage errors exit 2 like every command line, "no logs" 4 (skip)."""
    assert (EXIT_CRASH, EXIT_USAGE, EXIT_BLOCKING_ANOMALIES, EXIT_NO_REQUEST_LOGS) == (1, 2, 3, 4)
    train_path, _, log_dirs = data
    base = ["serving-logs", "--train-stats", str(train_path)]

    clean = _validate_process(*base, "--logs", str(log_dirs["clean"]))
    assert clean.returncode == 0, clean.stderr[-3000:]
    assert "blocking" not in clean.stderr

    skewed = _validate_process(*base, "--logs", str(log_dirs["fare_x1.5"]))
    assert skewed.returncode == EXIT_BLOCKING_ANOMALIES, skewed.stderr[-3000:]
    assert f"fare [skew] {JSD}: " in skewed.stderr

    no_logs = _validate_process(*base, "--logs", str(tmp_path / "nowhere"))
    assert no_logs.returncode == EXIT_NO_REQUEST_LOGS, no_logs.stderr[-3000:]

    missing_stats = ["--train-stats", str(tmp_path / "missing.pb")]
    crash = _validate_process("serving-logs", "--logs", str(log_dirs["clean"]), *missing_stats)
    assert crash.returncode == EXIT_CRASH and "Traceback" in crash.stderr, crash.stderr[-3000:]

    usage = _validate_process("serving-logs", "--logs", str(log_dirs["clean"]))
    assert usage.returncode == EXIT_USAGE
    assert "the following arguments are required: --train-stats" in usage.stderr


def test_usage_errors_and_help_show_the_exit_statuses(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["serving-logs", "--logs", "x", "--train-stats", "y", "--severity-config"])
    assert exited.value.code == EXIT_USAGE
    with pytest.raises(SystemExit) as exited:
        main(["serving-logs", "--help"])
    assert exited.value.code == 0
    assert EXIT_STATUS_HELP in capsys.readouterr().out
    for line in (
        "4   serving-logs: no request logs",
        "3   check, serving-logs: blocking anomalies",
    ):
        assert line in EXIT_STATUS_HELP and line in cli.__doc__


# ---- real traffic through the server ---------------------------------------------------------

BATCH = 50


def _http_variants(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    order = np.random.default_rng(0).permutation(len(frame))
    rows = frame.iloc[order[6000:7000]].drop(columns=["tips"]).reset_index(drop=True)
    every_20th = np.arange(len(rows)) % 20 == 0
    new_payment = rows.copy()
    new_payment.loc[every_20th, "payment_type"] = "Bitcoin"
    missing_fare = rows.copy()
    missing_fare.loc[every_20th, "fare"] = np.nan
    return {
        "clean": rows,
        "new_payment": new_payment,
        "fare_in_cents": rows.assign(fare=rows["fare"] * 100),
        "fare_x1.5": rows.assign(fare=rows["fare"] * 1.5),
        "missing_fare": missing_fare,
    }


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready dicts, None for a missing value."""
    return [
        {k: None if pd.isna(v) else (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for r in frame.to_dict("records")
    ]


def _request(batch: list[dict], number: int) -> dict:
    """Three ways clients send the same rows: missing keys left out, null, serving_raw markers."""
    if number % 3 == 0:
        return {"instances": [{k: v for k, v in r.items() if v is not None} for r in batch]}
    if number % 3 == 1:
        return {"instances": batch}
    return {"signature_name": RAW_SIGNATURE, "instances": raw_instances(TAXI, batch)}


def _logged_count(directory: Path) -> int:
    import tensorflow as tf

    files = [str(p) for p in directory.glob("requests-*.tfrecord")]
    return sum(1 for _ in tf.data.TFRecordDataset(files)) if files else 0


@pytest.fixture(scope="module")
def served_logs(trained_export, tmp_path_factory) -> dict[str, Path]:
    """Each variant's 1,000 rows sent through a real server; its request log, per variant."""
    root = tmp_path_factory.mktemp("served_logs")
    _, exported = trained_export
    shutil.copytree(exported.export_dir, root / "base" / "1")
    log_dir = root / "request-log"
    flags = ("--request-log", str(log_dir), "--request-log-sample", "1.0")
    flags += ("--request-log-flush-seconds", "0.2")
    variants = _http_variants(read_sample(TAXI, SAMPLE))
    logs = {}
    with running_server(root / "base", root, *flags) as client:
        for name, frame in variants.items():
            records = _records(frame)
            for number, start in enumerate(range(0, len(records), BATCH)):
                body = _request(records[start : start + BATCH], number)
                status, answer = client.post(f"/v1/models/{MODEL}:predict", body)
                assert status == 200, answer
            sent = len(records)
            wait_for(lambda sent=sent: _logged_count(log_dir) == sent, what=f"{name} logged")
            logs[name] = root / "logs" / name
            logs[name].mkdir(parents=True)
            for path in log_dir.glob("requests-*.tfrecord"):
                path.rename(logs[name] / path.name)
    return logs


@pytest.fixture(scope="module")
def served_reports(data, schema, served_logs):
    _, train_stats, _ = data
    return {name: check_serving_logs(d, train_stats, schema) for name, d in served_logs.items()}


def test_real_traffic_logged_by_the_server_passes(served_reports):
    """Rows with missing values, however a client marks them, are logged as absent features:
    no FEATURE_TYPE_LOW_NUMBER_VALUES, no INT_TYPE_SMALL_INT from empty value lists."""
    report = served_reports["clean"]
    assert report.anomalies == (), report.describe()
    check(report)


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("new_payment", {("payment_type", "ENUM_TYPE_UNEXPECTED_STRING_VALUES", Check.SCHEMA)}),
        (
            "fare_in_cents",
            {("fare", "FLOAT_TYPE_BIG_FLOAT", Check.SCHEMA), ("fare", JSD, Check.SKEW)},
        ),
        ("fare_x1.5", {("fare", JSD, Check.SKEW)}),
        (
            "missing_fare",  # fare is required, and of fixed shape [1]
            {
                ("fare", "FEATURE_TYPE_LOW_FRACTION_PRESENT", Check.SCHEMA),
                ("fare", "INVALID_FEATURE_SHAPE", Check.SCHEMA),
            },
        ),
    ],
)
def test_skews_in_real_traffic_still_block(served_reports, variant, expected):
    report = served_reports[variant]
    assert set(_found(report)) == expected, report.describe()
    assert all(a.severity is Severity.BLOCKING for a in report.anomalies)
    with pytest.raises(ValidationFailed):
        check(report)
