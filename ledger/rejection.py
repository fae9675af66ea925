"""The one error type for refused input: a stable machine code plus a human message."""

from __future__ import annotations


class Rejected(Exception):  # noqa: N818 - a verdict, not a fault
    """Input refused before anything was stored.

    `code` is stable and machine-readable (it travels to `coi.rejected`);
    `message` tells a person what was wrong and, where it helps, what to do.
    """

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.field = field
