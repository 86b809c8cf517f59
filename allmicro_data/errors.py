"""Domain errors, raised where the problem is known and mapped to HTTP responses in one place."""

from __future__ import annotations


class DomainError(Exception):
    """Base of the errors a user can act on; the message is safe to show."""

    status = 400
    title = "Bad request"


class NotFound(DomainError):
    """The object does not exist, or the caller may not know that it does."""

    status = 404
    title = "Not found"


class Conflict(DomainError):
    status = 409
    title = "Conflict"


class Invalid(DomainError):
    status = 422
    title = "Invalid input"


class Forbidden(DomainError):
    """The caller may see the object but not do this to it."""

    status = 403
    title = "Forbidden"


class Unauthorised(DomainError):
    status = 401
    title = "Authentication required"
