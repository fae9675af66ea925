"""Identifiers as HTTPS URIs under the operator's base (`COI_ID_BASE`).

GS1 has no EPC scheme for ISBT 128 donation numbers, and EPCIS and FHIR both want URIs: the
operator names a base it controls (its own domain), and every identifier becomes a path under
it. Batch, unit, sample, shipment and label ids are unique only within one patient's journey
(a COI), so they live under that COI's path; DINs, cartridges, shuttles, loggers, sites and
principals are unique ledger-wide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

# What RFC 3986 allows in a URI: anything else (a space, a quote, a bracket) is refused.
_NOT_IN_URI = re.compile(r"[^A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]")
# RFC 2606 reserves .invalid: a placeholder that can never resolve to someone else's data.
DEFAULT_BASE = "https://coi-ledger.invalid/id"


class BaseError(ValueError):
    """COI_ID_BASE is not an HTTPS URL the ids can live under."""


def checked_base(text: str) -> str:
    """`text` as a base: an https URL with a host, no query or fragment; no trailing slash."""
    if _NOT_IN_URI.search(text):
        raise BaseError(
            f"{text!r} holds a character a URI cannot (a space, a quote, <, >, ...): percent-encode it"
        )
    parts = urlsplit(text)
    if parts.scheme != "https" or not parts.hostname:
        raise BaseError(f"{text!r} is not an https:// URL with a host (e.g. https://id.example.org/coi)")
    if parts.query or parts.fragment:
        raise BaseError(f"{text!r} has a query or a fragment; a base is scheme, host and path only")
    if parts.username is not None or parts.password is not None:
        raise BaseError(f"{parts.scheme}://...@{parts.hostname}: a base holds no user or password")
    if not text.startswith("https://") or parts.netloc != parts.netloc.lower():
        raise BaseError(f"{text!r}: write the scheme and host in lower case, as partners will compare them")
    return text.rstrip("/")


def _segment(text: str) -> str:
    return quote(text, safe="")


@dataclass(frozen=True)
class Ids:
    """The URIs of one patient's things under `base`."""

    base: str
    coi: str

    def patient(self) -> str:
        return f"{self.base}/coi/{_segment(self.coi)}"

    def local(self, kind: str, identifier: str) -> str:
        """A batch, unit, sample, shipment, label, deviation or hold of this patient."""
        return f"{self.patient()}/{kind}/{_segment(identifier)}"

    def unit(self, unit_id: str) -> str:
        return self.local("unit", unit_id)

    def batch(self, batch_id: str) -> str:
        return self.local("batch", batch_id)

    def shipment(self, shipment_id: str) -> str:
        return self.local("shipment", shipment_id)

    def event(self, event_id: str) -> str:
        return self.local("event", event_id)

    def shared(self, kind: str, identifier: str) -> str:
        """A DIN, cartridge, shuttle, logger, site or principal: unique ledger-wide."""
        return f"{self.base}/{kind}/{_segment(identifier)}"

    def din(self, din: str) -> str:
        return self.shared("din", din)

    def site(self, site: str) -> str:
        return self.shared("site", site)

    def principal(self, principal: str) -> str:
        return self.shared("principal", principal)

    def node(self, kind: str, identifier: str) -> str:
        """The URI of a genealogy node of `kind` (projections/rows.py EdgeRow kinds)."""
        if kind == "patient":
            return self.patient()
        if kind in ("donation", "din"):
            return self.din(identifier)
        if kind == "cartridge":
            return self.shared("cartridge", identifier)
        if kind in ("bag", "product", "sample", "unit"):
            return self.unit(identifier)
        return self.local(kind, identifier)
