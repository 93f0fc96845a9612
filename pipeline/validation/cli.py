"""``python -m pipeline.validation``: statistics, checks and schema review from the shell.

    stats --input 'runs/<id>/splits/train/part-*.parquet' --output runs/<id>/stats/train.pb
    check --stats eval.pb --environment TRAINING [--previous-stats train.pb]
          [--serving-stats serving.pb] [--severity-config severity.json] [--report out.json]
    infer --input 'new/part-*.parquet' [--output candidate.pbtxt]
    report --stats train=train.pb --stats eval=eval.pb --stats serving=serving.pb
           --output validation.html [--severity-config severity.json]
    serving-logs --logs DIR --train-stats train.pb [--output-stats serving.pb]
           [--report out.json] [--html out.html] [--severity-config severity.json]

Arguments ``stats``/``infer``/``serving-logs`` do not recognize are passed to Beam (e.g.
``--runner``). ``infer`` never fails on a difference, it only shows it.

Exit status: an orchestrator must tell a verdict on the data (retrying cannot change it) from a
crash (worth retrying), so each outcome has its own code:

    0   success: no blocking anomaly
    1   crash: an uncaught exception (Python's default status), worth retrying
    2   usage error: a bad command line or an unknown dataset (as every pipeline command line)
    3   check, serving-logs: blocking anomalies found; the list is printed to stderr;
        any command: another verdict, e.g. no reviewed schema for the dataset
    4   serving-logs: no request logs to check (the directory is absent or holds none)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import tensorflow_data_validation as tfdv

from pipeline import storage
from pipeline.cli import EXIT_USAGE, add_dataset_argument, dataset_from_args, exit_on_usage_error
from pipeline.serving.request_log import FILE_PATTERN
from pipeline.validation.anomalies import (
    DEFAULT_SEVERITY,
    SeverityConfig,
    ValidationReport,
    validate_statistics,
)
from pipeline.validation.report import write_html
from pipeline.validation.schema import (
    diff_schemas,
    infer_candidate_schema,
    load_schema,
    schema_path,
)
from pipeline.validation.serving_logs import (
    combine,
    log_file_pattern,
    serving_log_statistics,
    serving_reports,
)
from pipeline.validation.splits import SERVING, TRAIN, validate_splits
from pipeline.validation.stats import compute_statistics, load_statistics
from pipeline.verdicts import EXIT_VERDICT, Verdict

# See "Exit status" in the module docstring; the DAG's skew-check task mirrors these numbers.
EXIT_CRASH = 1  # what Python exits with on an uncaught exception; named for the docs and tests
EXIT_BLOCKING_ANOMALIES = 3
EXIT_NO_REQUEST_LOGS = 4

EXIT_STATUS_HELP = """exit status:
  0   no blocking anomaly
  1   crash (uncaught exception): worth retrying
  2   usage error (bad command line, unknown dataset)
  3   check, serving-logs: blocking anomalies found (listed on stderr): retrying will not help
  4   serving-logs: no request logs to check"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.validation",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    stats = commands.add_parser("stats", help="compute TFDV statistics of Parquet split files")
    stats.add_argument("--input", required=True, help="file pattern, e.g. 'dir/part-*.parquet'")
    stats.add_argument("--output", required=True, help="binary statistics proto (path or gs://)")

    check = commands.add_parser(
        "check",
        help="validate statistics against the schema",
        epilog="exit status: 0 no blocking anomaly, 1 a crash, 3 blocking anomalies (listed on "
        "stderr), 2 usage error",
    )
    check.add_argument("--stats", required=True)
    check.add_argument("--environment", required=True, choices=("TRAINING", "SERVING"))
    check.add_argument("--previous-stats", help="drift baseline")
    check.add_argument("--serving-stats", help="skew: serving statistics")
    check.add_argument("--severity-config", type=Path, help="JSON severity rules")
    check.add_argument("--report", help="write the report as JSON here")
    _add_schema_args(check)

    infer = commands.add_parser(
        "infer",
        help="propose a schema from split files; show how it differs from the reviewed one",
    )
    infer.add_argument(
        "--input",
        required=True,
        help="Parquet split files, e.g. 'SPLITS/train/*.parquet' from `python -m "
        "pipeline.warehouse --dataset NAME --output SPLITS` (not the source CSV)",
    )
    infer.add_argument("--output", type=Path, help="also write the candidate schema (pbtxt)")
    infer.add_argument("--stats-output", type=Path, help="keep the statistics here")
    _add_schema_args(infer)

    report = commands.add_parser("report", help="HTML page: statistics, anomalies, skew/drift")
    report.add_argument(
        "--stats",
        required=True,
        action="append",
        type=_named_path,
        metavar="SPLIT=FILE",
        help="statistics of one split; repeat (train, eval, serving, ...)",
    )
    report.add_argument("--output", required=True)
    report.add_argument("--title", default="Validation report")
    report.add_argument("--severity-config", type=Path, help="JSON severity rules")
    _add_schema_args(report)

    logs = commands.add_parser(
        "serving-logs",
        help="validate served request logs (SERVING) and train/serving skew",
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    logs.add_argument("--logs", required=True, help=f"directory of {FILE_PATTERN} (or gs://)")
    logs.add_argument("--train-stats", required=True, help="training statistics")
    logs.add_argument("--output-stats", help="keep the serving statistics here")
    logs.add_argument("--report", help="write the report as JSON here")
    logs.add_argument("--html", help="write the HTML report here")
    logs.add_argument("--title", default="Serving log validation")
    logs.add_argument("--severity-config", type=Path, help="JSON severity rules")
    _add_schema_args(logs)
    for command in commands.choices.values():
        command.add_argument(
            "--verbose", action="store_true", help="show TensorFlow's and TFDV's start-up output"
        )
    return parser


def _named_path(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected SPLIT=FILE, got {text!r}")
    return name, path


def _severity(path: Path | None) -> SeverityConfig:
    return SeverityConfig.from_json(path) if path else DEFAULT_SEVERITY


def _add_schema_args(parser: argparse.ArgumentParser) -> None:
    add_dataset_argument(parser)
    parser.add_argument(
        "--schemas-dir", type=Path, help="directory of <schema>/schema.pbtxt (default: shipped)"
    )


def _run_stats(args: argparse.Namespace, beam_args: list[str]) -> int:
    stats = compute_statistics(args.input, args.output, beam_args)
    print(f"wrote statistics of {stats.datasets[0].num_examples} examples to {args.output}")
    return 0


def _run_check(args: argparse.Namespace) -> int:
    severity = _severity(args.severity_config)
    report = validate_statistics(
        load_statistics(args.stats),
        load_schema(dataset_from_args(args), args.schemas_dir),
        args.environment,
        previous_stats=load_statistics(args.previous_stats) if args.previous_stats else None,
        serving_stats=load_statistics(args.serving_stats) if args.serving_stats else None,
        severity=severity,
    )
    if args.report:
        storage.write_json_atomic(args.report, report.to_manifest())
    print(report.describe())
    return _verdict(report, EXIT_BLOCKING_ANOMALIES)


def _run_infer(args: argparse.Namespace, beam_args: list[str]) -> int:
    dataset = dataset_from_args(args)
    if not _looks_like_parquet(args.input):
        print(
            f"error: --input {args.input!r} matches no Parquet split files; infer reads split "
            f"files, e.g. from `python -m pipeline.warehouse --dataset {dataset.name} --output "
            "SPLITS` (then --input 'SPLITS/train/*.parquet'), not the source file",
            file=sys.stderr,
        )
        return EXIT_USAGE
    with tempfile.TemporaryDirectory() as tmp:
        stats_path = args.stats_output or Path(tmp) / "stats.pb"
        stats = compute_statistics(args.input, stats_path, beam_args, exclude=(dataset.label.name,))
    candidate = infer_candidate_schema(stats, dataset)
    committed = schema_path(dataset, args.schemas_dir)
    existed = committed.is_file()
    changes = (
        diff_schemas(load_schema(dataset, args.schemas_dir), candidate, stats) if existed else []
    )
    if args.output:
        tfdv.write_schema_text(candidate, str(args.output))
        print(f"wrote the candidate schema to {args.output}: review it (presence, ranges, domains)")
    if not existed:
        print(f"no reviewed schema at {committed} yet; nothing to compare with")
    elif not changes:
        print(f"the new data agrees with {committed}")
    else:
        print(f"{len(changes)} differences from {committed} (review before editing it):")
        for change in changes:
            print(f"  {change}")
    return 0


def _looks_like_parquet(pattern: str) -> bool:
    """Every file the pattern matches starts with Parquet's magic bytes (and there is one)."""
    paths = storage.glob(pattern)
    if not paths:
        return False
    for path in paths[:20]:
        with storage.open_read(path) as handle:
            if handle.read(4) != b"PAR1":
                return False
    return True


def _run_report(args: argparse.Namespace) -> int:
    stats = {name: load_statistics(path) for name, path in args.stats}
    schema = load_schema(dataset_from_args(args), args.schemas_dir)
    reports = validate_splits(stats, schema, _severity(args.severity_config))
    write_html(args.output, stats, reports, args.title)
    print(f"wrote {args.output}")
    return 0


def _run_serving_logs(args: argparse.Namespace, beam_args: list[str]) -> int:
    schema = load_schema(dataset_from_args(args), args.schemas_dir)
    train_stats = load_statistics(args.train_stats)
    try:
        log_file_pattern(args.logs)  # only this FileNotFoundError means "no logs", not Beam's
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_NO_REQUEST_LOGS
    serving_stats = serving_log_statistics(args.logs, args.output_stats, beam_args)
    reports = serving_reports(train_stats, serving_stats, schema, _severity(args.severity_config))
    report = combine(reports, "SERVING")
    if args.report:
        storage.write_json_atomic(args.report, report.to_manifest())
    if args.html:
        write_html(args.html, {TRAIN: train_stats, SERVING: serving_stats}, reports, args.title)
    rows = serving_stats.datasets[0].num_examples if serving_stats.datasets else 0
    print(f"checked {rows} logged requests in {args.logs}")
    print(report.describe())
    return _verdict(report, EXIT_BLOCKING_ANOMALIES)


def _verdict(report: ValidationReport, blocking_status: int) -> int:
    """0 if ``report`` passed; else list its blocking anomalies on stderr, where a task log that
    only keeps the tail of the output, or a caller that only reads errors, still finds them."""
    if report.passed:
        return 0
    print(f"{len(report.blocking)} blocking anomalies ({report.environment}):", file=sys.stderr)
    for anomaly in report.blocking:
        line = f"  {anomaly.feature} [{anomaly.check.value}] {anomaly.kind}: {anomaly.description}"
        print(line, file=sys.stderr)
    return blocking_status


def main(argv: list[str] | None = None) -> int:
    args, beam_args = _parser().parse_known_args(argv)
    if args.command not in ("stats", "infer", "serving-logs") and beam_args:
        _parser().error(f"unrecognized arguments: {' '.join(beam_args)}")
    if hasattr(args, "dataset"):
        with exit_on_usage_error(EXIT_USAGE):
            dataset_from_args(args)
    try:
        return _run_command(args, beam_args)
    except Verdict as verdict:  # e.g. MissingSchema: retrying cannot change it
        print(f"verdict: {verdict}", file=sys.stderr)
        return EXIT_VERDICT


def _run_command(args: argparse.Namespace, beam_args: list[str]) -> int:
    if args.command == "stats":
        return _run_stats(args, beam_args)
    if args.command == "check":
        return _run_check(args)
    if args.command == "report":
        return _run_report(args)
    if args.command == "serving-logs":
        return _run_serving_logs(args, beam_args)
    return _run_infer(args, beam_args)


if __name__ == "__main__":
    sys.exit(main())
