"""The gRPC endpoint of ``python -m pipeline.serving``: TF Serving's services on a grpcio server.

The services are registered with the official ``tensorflow_serving.apis`` registration
functions, so method paths and message types are TF Serving's own. One thing changes: requests
are parsed inside the call, so bytes that are no valid request message get INVALID_ARGUMENT
(grpcio's own parse failure would be INTERNAL).

Limits, all flags: the largest message received and sent (RESOURCE_EXHAUSTED beyond, from
grpcio), the number of calls in the server at once (``--grpc-max-concurrent-rpcs``: calls
beyond it get RESOURCE_EXHAUSTED at once rather than a queue that outlives their deadlines),
the threads that run them, and the rows one request may carry. Deadlines are checked before a
model runs (see :func:`pipeline.serving.grpc_service.check_deadline`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable, Sequence
from concurrent import futures

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from pipeline.serving.grpc_service import (
    DEFAULT_MAX_BATCH_SIZE,
    ApiOptions,
    ModelServicer,
    PredictionServicer,
    ServedModels,
)
from pipeline.serving.signature_rules import SignatureRules

log = logging.getLogger("pipeline.serving")

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class GrpcSettings:
    """Where the endpoint listens and how much it takes on."""

    host: str = "127.0.0.1"
    port: int = 8500
    threads: int = 8
    max_concurrent_rpcs: int = 64
    max_receive_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_send_bytes: int = DEFAULT_MAX_MESSAGE_BYTES


class _Collector:
    """Stands in for a server to collect the handlers an official ``add_*_to_server`` adds."""

    def __init__(self) -> None:
        self.handlers: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.handlers.extend(handlers)


class _ParsedInCall(grpc.GenericRpcHandler):
    """The official handlers, with the request parsed by the call itself."""

    def __init__(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._handlers = list(handlers)

    def service(self, handler_call_details):
        for generic in self._handlers:
            handler = generic.service(handler_call_details)
            if handler is not None:
                return _parse_in_call(handler, handler_call_details.method)
        return None


def _parse_in_call(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    parse: Callable[[bytes], object] = handler.request_deserializer
    behavior = handler.unary_unary
    message = method.rsplit("/", 1)[-1] + " request"

    def call(raw: bytes, context: grpc.ServicerContext):
        try:
            request = parse(raw)
        except Exception as error:  # DecodeError, or anything else the parser raises
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request is not a valid {message}: {type(error).__name__}: {error}",
            )
        return behavior(request, context)

    return grpc.unary_unary_rpc_method_handler(
        call, request_deserializer=None, response_serializer=handler.response_serializer
    )


def create_grpc_server(served: ServedModels, settings: GrpcSettings) -> tuple[grpc.Server, int]:
    """A started server with both services on ``settings.host:port``; returns it and the port.

    Raises ``RuntimeError`` if the address cannot be bound (e.g. the port is taken).
    """
    collector = _Collector()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(served), collector
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(served), collector)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="grpc"),
        handlers=[_ParsedInCall(collector.handlers)],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", settings.max_receive_bytes),
            ("grpc.max_send_message_length", settings.max_send_bytes),
            ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share
        ],
    )
    address = f"{settings.host}:{settings.port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as error:
        raise RuntimeError(f"cannot listen for gRPC on {address}: {error}") from None
    if port == 0:  # older grpcio reports a failed bind this way
        raise RuntimeError(f"cannot listen for gRPC on {address}")
    server.start()
    return server, port


# ---- command line ------------------------------------------------------------------------


def add_grpc_arguments(parser: argparse.ArgumentParser) -> None:
    """The gRPC flags of ``python -m pipeline.serving``."""
    group = parser.add_argument_group("gRPC (TF Serving's PredictionService and ModelService)")
    group.add_argument("--grpc-host", default="127.0.0.1", help="default: loopback only")
    group.add_argument("--grpc-port", type=int, default=8500, help="0 turns gRPC off")
    group.add_argument("--grpc-threads", type=int, default=8, help="calls run at once")
    group.add_argument(
        "--grpc-max-concurrent-rpcs",
        type=int,
        default=64,
        help="calls in the server at once, running or waiting; RESOURCE_EXHAUSTED beyond",
    )
    group.add_argument("--grpc-max-receive-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES)
    group.add_argument("--grpc-max-send-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES)
    group.add_argument(
        "--grpc-max-batch-size",
        type=int,
        default=DEFAULT_MAX_BATCH_SIZE,
        help="rows (examples) one request may carry",
    )
    # Shared with the REST API, which may define them first.
    if parser.get_default("enable_signature_method_name_check") is None:
        group.add_argument(
            "--enable-signature-method-name-check",
            action="store_true",
            help="as TF Serving's flag: Classify/Regress/Predict also check the signature's "
            "method_name (off: its inputs and outputs decide)",
        )
    if parser.get_default("version_label") is None:
        group.add_argument(
            "--version-label",
            action="append",
            default=[],
            metavar="LABEL=VERSION",
            help="model_spec.version_label LABEL means VERSION (repeatable), e.g. stable=3",
        )


def version_labels(pairs: Sequence[str]) -> dict[str, int]:
    """``["stable=3"]`` -> ``{"stable": 3}``; ValueError naming a malformed pair."""
    labels = {}
    for pair in pairs:
        label, _, version = pair.partition("=")
        if not label or not version.isascii() or not version.isdigit():
            raise ValueError(f"--version-label {pair!r}: expected LABEL=VERSION, e.g. stable=3")
        labels[label] = int(version)
    return labels


def settings_from_args(args: argparse.Namespace) -> tuple[GrpcSettings, ApiOptions]:
    settings = GrpcSettings(
        host=args.grpc_host,
        port=args.grpc_port,
        threads=args.grpc_threads,
        max_concurrent_rpcs=args.grpc_max_concurrent_rpcs,
        max_receive_bytes=args.grpc_max_receive_bytes,
        max_send_bytes=args.grpc_max_send_bytes,
    )
    options = ApiOptions(
        max_batch_size=args.grpc_max_batch_size,
        rules=SignatureRules(method_name_check=args.enable_signature_method_name_check),
        version_labels=version_labels(args.version_label),
    )
    return settings, options
