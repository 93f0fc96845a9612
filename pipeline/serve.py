"""``python -m pipeline.serve``: serve versioned exports with TensorFlow Serving's REST API.

    python -m pipeline.serve [--dataset NAME] [--model-base models/<model>] [--model-name NAME] \\
        [--host 127.0.0.1 --port 8501 --poll-seconds 2] \\
        [--request-log DIR --request-log-sample 0.1] [--max-body-bytes N] \\
        [--online-store sqlite:PATH|redis://host:port]

Serves ``<model_base>/<version>/`` at ``/v1/models/<name>[/versions/<N>]`` (status),
``.../metadata``, ``...:predict`` and ``...:classify``. The newest complete version answers
requests without a version; a newly pushed one (see :mod:`pipeline.push`) is loaded in the
background and swapped in without a restart. The first version is loaded before the port opens,
so a client that can connect finds the model ready. With ``--online-store`` the server fills
the dataset's window and join features of every JSON row from that store before encoding it
(:mod:`pipeline.online.enrich`): a client sends only what it knows.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import uvicorn

from pipeline.cli import add_dataset_argument, dataset_from_args, exit_on_usage_error
from pipeline.serving.app import DEFAULT_MAX_BODY_BYTES, create_app
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
    parser.add_argument("--log-level", default="info")
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
    return ServingService(
        args.model_name, args.definition, registry, request_log, online_enricher(args)
    )


def online_enricher(args: argparse.Namespace):
    """The enricher of ``--online-store`` (None without one)."""
    if not args.online_store:
        return None
    from pipeline.online.enrich import Enricher
    from pipeline.online.stores import open_store

    return Enricher(args.definition, open_store(args.online_store))


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    with exit_on_usage_error():
        args.definition = dataset_from_args(args)
    args.model_name = args.model_name or args.definition.served_model_name
    args.model_base = args.model_base or Path("models") / args.model_name
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    service = build_service(args)
    app = create_app(service, args.max_body_bytes, args.poll_seconds)
    log.info(
        "serving %r from %s on http://%s:%d", args.model_name, args.model_base, args.host, args.port
    )
    uvicorn.run(
        app, host=args.host, port=args.port, log_level=args.log_level.lower(), access_log=False
    )


if __name__ == "__main__":
    main()
