"""The one error hierarchy of the domain; each adapter maps it to its own wire form."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str
    row: int | None = None


class FleetError(Exception):
    """Base of every error the domain raises on purpose; `errors` names bad fields (and rows)."""

    def __init__(self, detail: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors: list[FieldError] = errors or []


class NotFound(FleetError, LookupError):
    """The entity does not exist for this caller (other cities' rows look the same)."""


class Conflict(FleetError):
    """The change would break a uniqueness or state rule (duplicate endpoint, serial, name)."""


class Replaced(Conflict):
    """The entity was replaced by another (a route by its re-planned successor): the change
    belongs on that one, named in `replaced_by` (None: nothing replaces it)."""

    def __init__(self, detail: str, replaced_by: object | None) -> None:
        super().__init__(detail)
        self.replaced_by = replaced_by


class PermissionDenied(FleetError):
    """The caller's role may not do this."""


class Unauthenticated(FleetError):
    """No valid credentials came with the request."""


class ValidationFailed(FleetError):
    """Input broke a domain rule; carries one entry per bad field (and row, for imports)."""


class PayloadTooLarge(FleetError):
    """The request body exceeds what we accept."""


class UnsupportedMediaType(FleetError):
    """The body is not of a type this endpoint takes (e.g. an attachment that is not an image)."""


class PreconditionRequired(FleetError):
    """A change to a versioned entity came without `If-Match`: it could overwrite another's change."""


class PreconditionFailed(FleetError):
    """`If-Match` named a version that is no longer current; carries the current one."""

    def __init__(self, detail: str, current_version: int) -> None:
        super().__init__(detail)
        self.current_version = current_version


class Unavailable(FleetError):
    """A dependency (the database) is away for now: the request may succeed if tried later."""

    retry_after_s = 10


class NotConfigured(FleetError):
    """This server lacks a setting the request needs (FLEET_CREDENTIALS_KEY, say): an operator's
    configuration error, which retrying cannot mend (so not a 503 with Retry-After)."""


class ServiceBusy(FleetError):
    """Fleet cannot take this now (every database connection is busy); the caller should retry."""

    retry_after_s = 5


class RoutingServiceFailed(Unavailable):
    """The road-distance service (FLEET_ROUTING_URL) did not answer, or answered something that is
    not a distance table: a plan cannot be solved on guesses, so it fails and may be retried."""


class SettingsError(ValueError):
    """A `FLEET_*` variable holds something Fleet cannot use; says which, and what it expects."""

    def __init__(self, variable: str, expected: str, got: str | None = None) -> None:
        self.variable = variable
        self.expected = expected
        self.got = got
        super().__init__(f"{variable} must be {expected}" + (f", got {got!r}" if got is not None else ""))
