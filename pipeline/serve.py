"""``python -m pipeline.serve``: serve versioned exports with TF Serving's REST and gRPC APIs.

    python -m pipeline.serve --model-base runs/LATEST/serving/taxi --model-name taxi \\
        [--host 127.0.0.1 --port 8501 --poll-seconds 2] \\
        [--request-log DIR --request-log-sample 0.1] [--max-body-bytes N] \\
        [--grpc-host 127.0.0.1 --grpc-port 8500 (0: off) --grpc-max-concurrent-rpcs N ...]

Serves ``<model_base>/<version>/`` at ``/v1/models/<name>[/versions/<N>]`` (status),
``.../metadata``, ``...:predict`` and ``...:classify``. The newest complete version answers
requests without a version; a newly pushed one (see :mod:`pipeline.push`) is loaded in the
background and swapped in without a restart. The first version is loaded before the port opens,
so a client that can connect finds the model ready.

The same process answers TF Serving's gRPC PredictionService and ModelService on
``--grpc-port`` (:mod:`pipeline.serving.grpc_endpoint`), from the same loaded versions and into
the same request log.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import grpc
import uvicorn

from pipeline.datasets import get_dataset
from pipeline.serving.app import DEFAULT_MAX_BODY_BYTES, create_app
from pipeline.serving.grpc_endpoint import (
    add_grpc_arguments,
    create_grpc_server,
    settings_from_args,
)
from pipeline.serving.grpc_service import ServedModels
from pipeline.serving.models import ModelRegistry
from pipeline.serving.request_log import RequestLog
from pipeline.serving.service import ServingService

log = logging.getLogger("pipeline.serve")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.serve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model-base", type=Path, required=True, help="holds <version>/ dirs")
    parser.add_argument("--model-name", required=True, help="the NAME in /v1/models/NAME")
    parser.add_argument("--dataset", default="taxi", help="raw features of JSON requests")
    parser.add_argument("--host", default="127.0.0.1", help="default: loopback only")
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--poll-seconds", type=float, default=2.0)
    parser.add_argument("--keep-versions", type=int, default=2, help="versions kept loaded")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--request-log", type=Path, help="write sampled requests here")
    parser.add_argument("--request-log-sample", type=float, default=0.1)
    parser.add_argument("--request-log-flush-seconds", type=float, default=10.0)
    parser.add_argument("--log-level", default="info")
    add_grpc_arguments(parser)
    return parser


def build_service(args: argparse.Namespace) -> ServingService:
    """The service for parsed CLI arguments, with the newest version already loaded."""
    registry = ModelRegistry(args.model_base, keep=args.keep_versions)
    registry.refresh()
    request_log = None
    if args.request_log is not None:
        request_log = RequestLog(
            args.request_log,
            args.request_log_sample,
            flush_seconds=args.request_log_flush_seconds,
        )
    return ServingService(args.model_name, get_dataset(args.dataset), registry, request_log)


def start_grpc(args: argparse.Namespace, service: ServingService) -> grpc.Server | None:
    """The gRPC endpoint over the REST service's registry and request log (None if off)."""
    if not args.grpc_port:
        return None
    settings, options = settings_from_args(args)
    served = ServedModels(
        service.model_name,
        get_dataset(args.dataset),
        service.registry,
        service.request_log,
        options,
    )
    try:
        server, port = create_grpc_server(served, settings)
    except RuntimeError as error:
        raise SystemExit(f"pipeline.serve: {error}") from None
    log.info("serving %r over gRPC on %s:%d", args.model_name, settings.host, port)
    return server


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings_from_args(args)
    except ValueError as error:
        parser.error(str(error))
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    service = build_service(args)
    app = create_app(service, args.max_body_bytes, args.poll_seconds)
    grpc_server = start_grpc(args, service)
    log.info(
        "serving %r from %s on http://%s:%d", args.model_name, args.model_base, args.host, args.port
    )
    try:
        uvicorn.run(
            app, host=args.host, port=args.port, log_level=args.log_level.lower(), access_log=False
        )
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=5).wait()
            if service.request_log is not None:  # what gRPC calls logged after REST closed it
                service.request_log.flush()


if __name__ == "__main__":
    main()
