"""The service's own errors and the HTTP status of every error a request can meet."""

from __future__ import annotations

from alignsam.errors import AlignSamError


class NotFoundError(AlignSamError, LookupError):
    """An id or path the request names is not known here (never uploaded, expired, or not in the index)."""


class TooLargeError(AlignSamError, ValueError):
    """A request body over the configured size."""


class TimedOutError(AlignSamError, TimeoutError):
    """A request that ran past the configured time limit."""


class UnavailableError(AlignSamError, RuntimeError):
    """What the request needs is not configured on this server (no index to search) or failed to start."""


def status_of(err: BaseException) -> int:
    """The HTTP status for an error raised while answering a request (500 only for bugs)."""
    if isinstance(err, NotFoundError):
        return 404
    if isinstance(err, TooLargeError):
        return 413
    if isinstance(err, TimedOutError):
        return 504
    if isinstance(err, UnavailableError):
        return 503
    if isinstance(err, AlignSamError):
        return 400
    return 500
