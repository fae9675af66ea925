"""An offline bundle's layout: what `coi export bundle` writes and `coi verify-bundle` reads.

A zip holding, each as a file of its own so a change is named by file:
- `records/<sequence>.json`: a record's canonical bytes, verbatim (what its leaf hashes);
- `proofs.json`: for each record, its leaf index and RFC 9162 inclusion path in the checkpoint;
- `checkpoint.note`: the signed checkpoint every proof is against;
- `manifest.json`: every other file with its SHA-256 and size, what was asked for, the
  origin and the tree size; for a bundle written with a genealogy export (`--with-bundle`),
  that export's file name, format, SHA-256 and size (`export`; absent from older bundles).

The registry and policy records (the principals' public keys, the policy in force) sit among
the records: the verifier replays key state and policy from them, in log order.
"""

from __future__ import annotations

import msgspec

FORMAT = "coi-bundle/1"
MANIFEST = "manifest.json"
PROOFS = "proofs.json"
CHECKPOINT = "checkpoint.note"
RECORDS = "records/"


def record_name(sequence: int) -> str:
    return f"{RECORDS}{sequence}.json"


class FileEntry(msgspec.Struct, frozen=True):
    path: str
    sha256: str  # hex
    size: int


class Request(msgspec.Struct, frozen=True, omit_defaults=True):
    """What the bundle was asked for: one of a COI, a batch, a sequence range."""

    coi: str | None = None
    batch: str | None = None
    from_seq: int | None = None
    to_seq: int | None = None

    def describe(self) -> str:
        if self.coi is not None:
            return f"COI {self.coi}"
        if self.batch is not None:
            return f"batch {self.batch}"
        return f"sequences {self.from_seq} to {self.to_seq}"


class Made(msgspec.Struct, frozen=True):
    """What a genealogy export was rendered from besides the bundle's records, so that `coi
    verify-bundle` can render it again from them and compare. The manifest is not signed: these
    are the exporter's word, and the verifier says so."""

    asked: str  # "COI ..." or "batch ..."
    id_base: str
    exported_at: str
    rendering: int  # projections/export/formats.py RENDERING: the exporters' output version
    verified: bool  # the exporter trusted the ledger's key (else the export says NOT VERIFIED)


class ExportEntry(msgspec.Struct, frozen=True, omit_defaults=True):
    """The genealogy export a bundle was written with, beside it: bound by its digest."""

    path: str  # its file name, in the bundle's folder
    format: str  # json | csv | epcis | fhir | html
    sha256: str  # hex
    size: int
    made: Made | None = None


# omit_defaults: a bundle with no export is byte for byte what it was before `export` existed.
class Manifest(msgspec.Struct, frozen=True, omit_defaults=True):
    format: str
    origin: str
    tree_size: int
    request: Request
    cois: list[str]  # the patients whose histories the bundle holds, from their first record
    selected: list[int]  # the sequences asked for (the others are context: earlier chain, registry)
    # records the selection matched after the checkpoint: left out, they cannot be proved yet
    after_checkpoint: int
    files: list[FileEntry]
    export: ExportEntry | None = None


class Inclusion(msgspec.Struct, frozen=True):
    sequence: int
    leaf_index: int
    path: list[str]  # base64 hashes, RFC 9162 order


class Proofs(msgspec.Struct, frozen=True):
    tree_size: int
    proofs: list[Inclusion]
