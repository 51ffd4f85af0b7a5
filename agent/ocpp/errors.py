"""OCPP-J 1.6 CALLERROR codes, one exception class each, with the exact 1.6 spellings.

OCPP-J 1.6 Table 7: `NotImplemented` is an action the receiver does not know, `NotSupported` one it
knows but does not support. `FormationViolation` and `OccurenceConstraintViolation` are the official
1.6 spellings (errata §5.1/5.2: "known issues that will not be fixed"), not 2.0.1's.
"""

from __future__ import annotations

from typing import Any, ClassVar


class OcppError(Exception):
    """Raised by parsing, validation or a handler; becomes a CALLERROR frame."""

    code: ClassVar[str] = "GenericError"

    def __init__(self, description: str = "", details: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.description = description[:255]
        self.details = details or {}


class NotImplementedAction(OcppError):
    code = "NotImplemented"


class NotSupported(OcppError):
    code = "NotSupported"


class InternalError(OcppError):
    code = "InternalError"


class ProtocolError(OcppError):
    code = "ProtocolError"


class SecurityError(OcppError):
    code = "SecurityError"


class FormationViolation(OcppError):
    code = "FormationViolation"


class PropertyConstraintViolation(OcppError):
    code = "PropertyConstraintViolation"


class OccurenceConstraintViolation(OcppError):
    code = "OccurenceConstraintViolation"


class TypeConstraintViolation(OcppError):
    code = "TypeConstraintViolation"


class GenericError(OcppError):
    code = "GenericError"


ERROR_CODES: dict[str, type[OcppError]] = {
    cls.code: cls
    for cls in (
        NotImplementedAction,
        NotSupported,
        InternalError,
        ProtocolError,
        SecurityError,
        FormationViolation,
        PropertyConstraintViolation,
        OccurenceConstraintViolation,
        TypeConstraintViolation,
        GenericError,
    )
}
