"""The one error taxonomy of the platform.

Library code raises these; the service runtime maps each class to one gRPC status code in one
place (an interceptor), so handlers never set codes by hand. Messages must be safe to show a
caller and to log: they name fields, keys and limits, never record content.
"""

from __future__ import annotations


class MedxError(Exception):
    """Base of every error the platform raises on purpose."""


class InvalidInput(MedxError):
    """The caller sent something unusable (bad field, out of range, malformed record)."""


class NotFound(MedxError):
    """A named thing (artifact key, index, passage, run) does not exist."""


class NotReady(MedxError):
    """This component has not finished loading what it needs (model, index, entity tree)."""


class Unavailable(MedxError):
    """A dependency (object store, broker, model endpoint) cannot be reached right now."""


class PermissionDenied(MedxError):
    """The caller is authenticated but not allowed to do this."""


class Conflict(MedxError):
    """The request contradicts existing state, e.g. a retry with the same id but other content."""


class NotConfigured(MedxError):
    """The deployment lacks what the request needs (a judge, a model): not the caller's input,
    and not a transient outage; asking again changes nothing until an operator configures it."""
