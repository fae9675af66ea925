"""The error a setting read from the environment raises. It lives at the bottom of the layers
so that every layer reading a setting (the database URL in ledger.app, the Kafka transport in
ledger.site) raises the same one, which `coi` prints without a traceback."""

from __future__ import annotations


class ConfigError(Exception):
    """A setting that cannot be used; the message names it and says what is expected."""
