"""Kafka topic names, with a per-environment prefix (COI_TOPIC_PREFIX, e.g. "prod.")."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    prefix: str = ""

    @classmethod
    def from_env(cls) -> Topics:
        return cls(os.environ.get("COI_TOPIC_PREFIX", ""))

    @property
    def site_events(self) -> str:
        return f"{self.prefix}coi.site-events"

    @property
    def ledger(self) -> str:
        return f"{self.prefix}coi.ledger"

    @property
    def rejected(self) -> str:
        return f"{self.prefix}coi.rejected"

    @property
    def security(self) -> str:
        return f"{self.prefix}coi.security"

    @property
    def checkpoints(self) -> str:
        return f"{self.prefix}coi.checkpoints"

    def all(self) -> list[str]:
        return [self.site_events, self.ledger, self.rejected, self.security, self.checkpoints]
