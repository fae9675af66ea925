"""The Merkle log over the ledger's records: integration, signed checkpoints, proofs.

Records commit first (the event store is the system of record and gives each its global
sequence); the integrator then appends them, in sequence order, as leaves of an RFC 6962
tree whose perfect subtrees it stores, and the checkpointer signs tree heads. One
integrator writes at a time, by construction: each chunk of leaves, and each checkpoint, is
written holding the log's lock (LogStore.integrating); a second integrator (the relay and a
`coi submit` on one ledger) waits for it, says so, and carries on from where the first got
to. The tables can always be rebuilt from the records, so the database alone cannot keep the
ledger from signing a second, different head for a size it signed (after a truncation or a
restore): the signer's own memory (ledger/app/signermemory.py) does, checked before each
signature, and its lock, taken before the log's, makes every signer of the log take turns.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import Application

from ledger.app import ledgerkey
from ledger.app.config import checkpoint_policy
from ledger.app.signermemory import SignedHead, SignerMemory, SignerMemoryError
from ledger.audit.source import StoredCheckpoint
from ledger.store.logstore import LockTimeoutError, LogStore
from ledger.transparency import merkle
from ledger.transparency.checkpoint import Checkpoint, NoteSigner
from ledger.transparency.records import canonical, row_record

READ_CHUNK = 2000
log = logging.getLogger("coi.log")


class LogError(Exception):
    """The log cannot do what was asked (unknown sequence, inconsistent state)."""


class SigningRefusedError(LogError):
    """The signer's memory shows it signed a head this log does not extend: signing now would
    make two of its checkpoints disagree."""


class MerkleLog:
    def __init__(self, app: Application[UUID], waiting: Callable[[], None] | None = None) -> None:
        self.app = app
        self.store = LogStore(app.recorder)
        self.waiting = waiting or _say_waiting

    def integrate(self, progress: Callable[[int], None] | None = None) -> int:
        """Append every committed record not yet in the tree; returns the tree size.

        Each chunk's leaves are computed outside the lock (the ingest keeps writing records
        meanwhile) and appended holding it, if the tree is still the one they extend: another
        integrator may have appended first, and then this one carries on from its leaves
        (they follow from the records alone: they are the ones this one would write)."""
        tree = merkle.CompactRange()
        while True:
            size, after = self.store.size(), self.store.last_sequence()
            if size != tree.size:
                keys = merkle.CompactRange.edge_keys(size)
                edge = self.store.nodes(keys)
                tree = merkle.CompactRange(size, [edge[k] for k in keys])
            rows = self.store.records(after, READ_CHUNK)
            if not rows:
                return tree.size
            leaves, nodes = [], []
            for row in rows:
                nodes.extend(tree.append(merkle.leaf_hash(canonical(row_record(row)))))
                leaves.append((tree.size - 1, row[0]))
            try:
                with self.store.integrating(self.waiting) as c:
                    if self.store.size(c) != size:
                        tree = merkle.CompactRange()  # overtaken: start from the tables again
                        continue
                    self.store.append(leaves, nodes, c)
            except LockTimeoutError as exc:
                raise LogError(f"the Merkle log is not integrated: {exc}") from None
            if progress:  # outside the lock: the caller may do anything, integrate included
                progress(tree.size)

    def root(self, size: int) -> bytes:
        return merkle.root(size, self.store.nodes)

    def checkpoint(
        self, signer: NoteSigner | Sequence[NoteSigner], origin: str, *, memory: SignerMemory | None
    ) -> StoredCheckpoint:
        """Integrate and sign the current tree head, unless the latest checkpoint already
        covers it. Refuses to sign a head that is not consistent with the latest one, or with
        the last one the signer's `memory` says it signed (None: a signer that keeps none, a
        throwaway key). Signed (by every signer given: a rotation's old and new key) and stored
        holding the memory's lock, then the log's: no two checkpoints of one size, whatever the
        database has been through."""
        signers = [signer] if isinstance(signer, NoteSigner) else list(signer)
        self.integrate()
        try:
            with memory.holding() if memory else nullcontext(None) as signed:
                return self._sign(signers, origin, memory, signed)
        except SignerMemoryError as exc:
            raise LogError(str(exc)) from None

    def _sign(
        self, signers: list[NoteSigner], origin: str, memory: SignerMemory | None, signed: SignedHead | None
    ) -> StoredCheckpoint:
        try:
            with self.store.integrating(self.waiting) as c:
                size = self.store.size(c)
                nodes = lambda keys: self.store.nodes(keys, c)  # noqa: E731 - within this transaction
                root = merkle.root(size, nodes)
                if signed is not None and memory is not None:
                    _extends(signed, size, root, nodes, memory)
                latest = self.store.latest_checkpoint(c)
                if latest is not None and latest.size == size:
                    return latest
                if latest is not None:
                    proof = merkle.consistency_proof(latest.size, size, nodes)
                    if not merkle.verify_consistency(latest.size, size, latest.root, root, proof):
                        raise LogError(
                            f"the tree of size {size} is not consistent with the checkpoint at "
                            f"{latest.size}: refusing to sign; run coi verify"
                        )
                note = Checkpoint(origin, size, root).sign(*signers)
                stored = StoredCheckpoint(size, root, note, datetime.now(UTC).isoformat())
                if memory is not None:
                    # Remembered before the row is stored: a crash in between leaves the memory
                    # ahead of the database, and signing this same head again is allowed (same
                    # size, same root). The other order would let a crash forget a signature.
                    memory.remember(SignedHead(origin, size, _b64(root), note, stored.signed_at))
                self.store.add_checkpoint(stored, c)
                return stored
        except LockTimeoutError as exc:
            raise LogError(f"no checkpoint signed: {exc}") from None

    def due(self, every: int, seconds: float) -> bool:
        """A checkpoint is due every `every` records or `seconds` seconds with new records."""
        latest = self.store.latest_checkpoint()
        size = self.store.size()
        if latest is None:
            return size > 0
        if size - latest.size >= every:
            return True
        age = time.time() - datetime.fromisoformat(latest.signed_at).timestamp()
        return size > latest.size and age >= seconds

    # ---------------------------------------------------------------- proofs

    def _checkpoint_for(self, size: int | None) -> StoredCheckpoint:
        found = self.store.checkpoint(size) if size is not None else self.store.latest_checkpoint()
        if found is None:
            raise LogError(
                f"no checkpoint of size {size}"
                if size is not None
                else "no checkpoint yet; run coi checkpoint"
            )
        return found

    def inclusion(self, sequence: int, size: int | None = None) -> dict[str, Any]:
        """An RFC 9162 inclusion proof of record `sequence` in a signed checkpoint."""
        index = self.store.leaf_index(sequence)
        if index is None:
            raise LogError(
                f"sequence {sequence} is not in the log yet (or does not exist); run coi checkpoint"
            )
        checkpoint = self._checkpoint_for(size)
        if index >= checkpoint.size:
            raise LogError(
                f"sequence {sequence} (leaf {index}) came after the checkpoint of size {checkpoint.size}"
            )
        leaf = self.store.nodes([(0, index)])[(0, index)]
        path = merkle.inclusion_proof(index, checkpoint.size, self.store.nodes)
        return {
            "hash_encoding": "base64",
            "hash_algorithm": "SHA-256 (RFC 6962: leaf = H(0x00 || record), node = H(0x01 || left || right))",
            "sequence": sequence,
            "leaf_index": index,
            "tree_size": checkpoint.size,
            "leaf_hash": _b64(leaf),
            "root_hash": _b64(checkpoint.root),
            "inclusion_path": [_b64(h) for h in path],
            "checkpoint": checkpoint.note,
        }

    def consistency(self, old: int, new: int) -> dict[str, Any]:
        """An RFC 9162 consistency proof between two signed checkpoints."""
        first, second = self._checkpoint_for(old), self._checkpoint_for(new)
        if old > new:
            raise LogError("the first checkpoint must be the older (smaller) one")
        path = merkle.consistency_proof(old, new, self.store.nodes) if old < new else []
        return {
            "hash_encoding": "base64",
            "first_tree_size": old,
            "second_tree_size": new,
            "first_root_hash": _b64(first.root),
            "second_root_hash": _b64(second.root),
            "consistency_path": [_b64(h) for h in path],
            "first_checkpoint": first.note,
            "second_checkpoint": second.note,
        }


def _say_waiting() -> None:
    log.warning("another integrator holds the Merkle log (the relay, or another coi command); waiting for it")


def _extends(signed: SignedHead, size: int, root: bytes, nodes: merkle.Nodes, memory: SignerMemory) -> None:
    """Refuses (SigningRefusedError) a head that does not extend the last one signed: a smaller
    tree (rolled back), a different root at the same size, or a larger tree without a
    consistency proof from it (forked)."""
    if signed.size == 0 or (size == signed.size and root == signed.root_hash):
        return
    if size > signed.size:
        proof = merkle.consistency_proof(signed.size, size, nodes)
        if merkle.verify_consistency(signed.size, size, signed.root_hash, root, proof):
            return
    at = f"size {signed.size:,} this key signed ({_when(signed.signed_at)}; its note is in {memory.path})"
    changed = (
        f"records among the first {signed.size:,} were changed, deleted or replaced (truncated "
        "and written again, or restored from another copy)"
    )
    if size < signed.size:
        what = (
            f"the log holds {size:,} records but this key signed a checkpoint of {at}: the "
            "database was restored from a backup or truncated"
        )
    elif size == signed.size:
        what = f"the log of size {size:,} has another root than the checkpoint of {at}: {changed}"
    else:
        what = f"the log of size {size:,} does not extend the checkpoint of {at}: {changed}"
    raise SigningRefusedError(
        f"{what}. Do not re-sign: recover the signed records (the coi.ledger topic, a replica) "
        f"so the log holds the {signed.size:,} records this key signed again, or start a new log "
        "with a new origin (coi init) and keep this one's checkpoints as evidence"
    )


def _when(iso: str) -> str:
    return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


def settle(app: Application[UUID]) -> StoredCheckpoint | None:
    """Integrate new records and sign a checkpoint when the policy says one is due (raises
    ledgerkey.NoLedgerKeyError, after integrating, when one is due and no key is here)."""
    log = MerkleLog(app)
    log.integrate()
    every, seconds = checkpoint_policy()
    if log.due(every, seconds):
        return sign(log)
    return None


def sign(log: MerkleLog) -> StoredCheckpoint:
    """A checkpoint signed with this host's key for the log (and the retiring key while a
    rotation is in progress); ledgerkey.NoLedgerKeyError when this host holds none."""
    origin = ledgerkey.origin(log.store)
    if not ledgerkey.key_path(origin).exists():
        ledgerkey.move_old_keys(log.store)  # once: a key at the old place, if it is safe to take
    signers = ledgerkey.signers(origin)
    ledgerkey.publish(log.store, signers)
    return log.checkpoint(signers, origin, memory=ledgerkey.memory(origin))
