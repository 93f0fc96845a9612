"""``python -m pipeline.serving``: serve versioned exports with TF Serving's REST and gRPC APIs.

    python -m pipeline.serving [--dataset NAME] [--model-base models/<model>] [--model-name NAME] \\
        [--host 127.0.0.1 --port 8501 --poll-seconds 2] \\
        [--request-log DIR --request-log-sample 0.1] [--max-body-bytes N] \\
        [--header-timeout S --body-timeout S --idle-timeout S --max-connections N] \\
        [--version-label stable=3 ...] [--enable-signature-method-name-check] \\
        [--grpc-host 127.0.0.1 --grpc-port 8500 (0: off) --grpc-max-concurrent-rpcs N ...] \\
        [--online-store sqlite:PATH|redis://host:port]

Serves ``<model_base>/<version>/`` at ``/v1/models/<name>[/versions/<N>|/labels/<label>]``
(status), ``.../metadata``, ``...:predict``, ``...:classify`` and ``...:regress``. The newest
complete version answers requests without a version; a newly pushed one (see
:mod:`pipeline.push`) is loaded in the background and swapped in without a restart. The first
version is loaded before the port opens, so a client that can connect finds the model ready.
With ``--online-store`` the server fills the dataset's window and join features of every JSON
row from that store before encoding it (:mod:`pipeline.online.enrich`): a client sends only what
it knows.

Connections are bounded: a request head must arrive within ``--header-timeout`` seconds, its body
within ``--body-timeout``, an idle keep-alive connection is closed after ``--idle-timeout``, and
beyond ``--max-connections`` new connections get a 503 (see :mod:`pipeline.serving.connections`).

The same process answers TF Serving's gRPC PredictionService and ModelService on
``--grpc-port`` (:mod:`pipeline.serving.grpc_endpoint`; ``0`` turns it off), from the same loaded
versions and into the same request log.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
from pathlib import Path

from pipeline import console

if __name__ == "__main__":  # quiet before TensorFlow loads (--verbose shows it all)
    console.silence(verbose="--verbose" in sys.argv)

import grpc
import uvicorn

from pipeline.cli import add_dataset_argument, dataset_from_args, exit_on_usage_error
from pipeline.serving.app import DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY_BYTES, create_app
from pipeline.serving.connections import ConnectionLimits, guarded_protocol
from pipeline.serving.grpc_endpoint import (
    add_grpc_arguments,
    create_grpc_server,
    settings_from_args,
    version_labels,
)
from pipeline.serving.grpc_service import ServedModels
from pipeline.serving.models import ModelRegistry
from pipeline.serving.request_log import RequestLog
from pipeline.serving.service import ServingService

log = logging.getLogger("pipeline.serving")
_DEFAULTS = ConnectionLimits()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.serving",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataset_argument(parser)
    parser.add_argument(
        "--model-base", type=Path, help="holds <version>/ dirs (default: models/<model name>)"
    )
    parser.add_argument(
        "--model-name", help="the NAME in /v1/models/NAME (default: the dataset's model name)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="default: loopback only")
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--poll-seconds", type=float, default=2.0)
    parser.add_argument("--keep-versions", type=int, default=2, help="versions kept loaded")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--request-log", type=Path, help="write sampled requests here")
    parser.add_argument("--request-log-sample", type=float, default=0.1)
    parser.add_argument("--request-log-flush-seconds", type=float, default=10.0)
    parser.add_argument(
        "--online-store",
        help="fill the dataset's window and join features from this store: sqlite:PATH or "
        "redis://host:port[/db] (fed by python -m pipeline.online)",
    )
    limits = parser.add_argument_group("connection limits")
    limits.add_argument(
        "--header-timeout",
        type=float,
        default=_DEFAULTS.header_timeout,
        help="seconds for a request head to arrive (408 and close after)",
    )
    limits.add_argument(
        "--body-timeout",
        type=float,
        default=DEFAULT_BODY_TIMEOUT,
        help="seconds for a whole request body to arrive (408 and close after)",
    )
    limits.add_argument(
        "--idle-timeout",
        type=float,
        default=30.0,
        help="seconds a keep-alive connection may sit idle between requests",
    )
    limits.add_argument(
        "--max-connections",
        type=int,
        default=_DEFAULTS.max_connections,
        help="open connections beyond this get a 503 and are closed",
    )
    limits.add_argument("--max-header-bytes", type=int, default=_DEFAULTS.max_header_bytes)
    api = parser.add_argument_group("API")
    api.add_argument(
        "--version-label",
        action="append",
        default=[],
        metavar="LABEL=VERSION",
        help="serve VERSION at /labels/LABEL (repeatable)",
    )
    api.add_argument(
        "--enable-signature-method-name-check",
        action="store_true",
        help="as TF Serving's flag: :classify/:regress/:predict also check the method name",
    )
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--verbose", action="store_true", help="show TensorFlow's start-up output and warnings"
    )
    add_grpc_arguments(parser)
    return parser


def build_service(args: argparse.Namespace) -> ServingService:
    """The service for parsed CLI arguments, with the newest version already loaded."""
    registry = ModelRegistry(args.model_base, keep=args.keep_versions, freeze_gc=True)
    registry.refresh()
    request_log = None
    if args.request_log is not None:
        request_log = RequestLog(
            args.request_log,
            args.request_log_sample,
            flush_seconds=args.request_log_flush_seconds,
        )
    return ServingService(
        args.model_name,
        args.definition,
        registry,
        request_log,
        labels=version_labels(args.version_label),
        method_name_check=args.enable_signature_method_name_check,
        enricher=online_enricher(args),
    )


def online_enricher(args: argparse.Namespace):
    """The enricher of ``--online-store`` (None without one)."""
    if not args.online_store:
        return None
    from pipeline.online.enrich import Enricher
    from pipeline.online.stores import open_store

    return Enricher(args.definition, open_store(args.online_store))


def start_grpc(args: argparse.Namespace, service: ServingService) -> grpc.Server | None:
    """The gRPC endpoint over the REST service's registry and request log (None if off)."""
    if not args.grpc_port:
        return None
    settings, options = settings_from_args(args)
    served = ServedModels(
        service.model_name,
        args.definition,
        service.registry,
        service.request_log,
        options,
    )
    try:
        server, port = create_grpc_server(served, settings)
    except RuntimeError as error:
        raise SystemExit(f"pipeline.serving: {error}") from None
    log.info("serving %r over gRPC on %s:%d", args.model_name, settings.host, port)
    return server


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    with exit_on_usage_error():
        args.definition = dataset_from_args(args)
    try:
        settings_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    args.model_name = args.model_name or args.definition.served_model_name
    args.model_base = args.model_base or Path("models") / args.model_name
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    limits = ConnectionLimits(args.header_timeout, args.max_header_bytes, args.max_connections)
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if files != resource.RLIM_INFINITY and limits.max_connections > files - 64:
        log.warning("--max-connections %d is near the file limit %d", limits.max_connections, files)
    service = build_service(args)
    app = create_app(service, args.max_body_bytes, args.poll_seconds, args.body_timeout)
    grpc_server = start_grpc(args, service)
    log.info(
        "serving %r from %s on http://%s:%d", args.model_name, args.model_base, args.host, args.port
    )
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        http=guarded_protocol(limits, answer_now=app.answer_now),
        lifespan="on",
        timeout_keep_alive=args.idle_timeout,
        log_level=args.log_level.lower(),
        access_log=False,
    )
    try:
        uvicorn.Server(config).run()
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=5).wait()
            if service.request_log is not None:  # what gRPC calls logged after REST closed it
                service.request_log.flush()


if __name__ == "__main__":
    main()
