"""Request errors with the HTTP status TensorFlow Serving clients expect for them."""

from __future__ import annotations


class ServingError(Exception):
    """A request the server rejects; the message goes back to the client as ``{"error": ...}``."""

    status = 400


class BadRequest(ServingError):
    """Malformed body, unknown or mistyped field: the client must change the request."""

    status = 400


class NotFound(ServingError):
    """Unknown model name, or a version that is not loaded."""

    status = 404


class PayloadTooLarge(ServingError):
    """Body larger than ``--max-body-bytes``; rejected before it is read into memory."""

    status = 413


class RequestTimeout(ServingError):
    """The body did not arrive within ``--body-timeout``; the connection is closed."""

    status = 408
