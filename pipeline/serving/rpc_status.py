"""gRPC request errors: the status code TensorFlow Serving returns for a case, and its message.

The request-checking modules raise :class:`RpcError`; the servicers turn it into the call's
status, so everything below them stays free of ``grpc.ServicerContext``.
"""

from __future__ import annotations

import grpc


class RpcError(Exception):
    """A request the server answers with ``code`` and ``message`` instead of a response."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid_argument(message: str) -> RpcError:
    return RpcError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> RpcError:
    return RpcError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> RpcError:
    return RpcError(grpc.StatusCode.FAILED_PRECONDITION, message)


def unimplemented(message: str) -> RpcError:
    return RpcError(grpc.StatusCode.UNIMPLEMENTED, message)
