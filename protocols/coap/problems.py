"""The one mapper from domain and codec errors to CoAP error responses with diagnostic payloads."""

from __future__ import annotations

from aiocoap import error

from fleet import errors
from protocols.lwm2m.errors import CodecError


def _diagnostic(exc: errors.FleetError) -> str:
    details = "; ".join(f"{e.field}: {e.message}" for e in exc.errors)
    return f"{exc.detail} ({details})" if details else exc.detail


def to_coap_error(exc: Exception) -> error.RenderableError:
    """4.xx for the peer's mistakes; anything unexpected is the caller's to log as 5.00."""
    if isinstance(exc, CodecError):
        return error.BadRequest(str(exc))
    if isinstance(exc, errors.ValidationFailed):
        return error.BadRequest(_diagnostic(exc))
    if isinstance(exc, errors.NotFound):
        return error.NotFound(exc.detail)
    if isinstance(exc, errors.PermissionDenied | errors.Unauthenticated):
        return error.Forbidden(exc.detail)
    if isinstance(exc, errors.Conflict):
        return error.Conflict(exc.detail)
    if isinstance(exc, errors.PayloadTooLarge):
        return error.RequestEntityTooLarge(exc.detail)
    return error.InternalServerError("internal error")
