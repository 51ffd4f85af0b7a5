"""The errors a boot-slot backend raises, in a module of their own so that base.py (the
contract) and options.py (option parsing) both import them and not each other."""

from __future__ import annotations

from collections.abc import Mapping


class BackendError(Exception):
    """A bootloader operation failed or its read-back did not show the intended state.

    `op` names the verb, `raw_before`/`raw_after` carry the bootloader variables around a failed
    post-condition so the daemon can log the evidence.
    """

    def __init__(
        self,
        message: str,
        *,
        op: str | None = None,
        raw_before: Mapping[str, str] | None = None,
        raw_after: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.op = op
        self.raw_before = dict(raw_before or {})
        self.raw_after = dict(raw_after or {})


class BackendConfigError(BackendError, ValueError):
    """Unknown backend, unknown option or invalid option value (a configuration mistake)."""
