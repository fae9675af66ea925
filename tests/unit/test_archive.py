"""The monitor's archive on its own: what it keeps, what it refuses, and when it raises the alarm."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consumers.archive import LEARNED, Archive, ArchiveError, ForkError, Prove, UntrustedError
from ledger.audit.roots import Roots
from ledger.transparency import merkle
from ledger.transparency.checkpoint import Checkpoint, NoteSigner

SIGNER = NoteSigner("coi-ledger.test/log", Ed25519PrivateKey.generate())
NODES: dict[tuple[int, int], bytes] = {}
TREE = merkle.CompactRange()
for i in range(16):
    NODES.update(((level, idx), h) for level, idx, h in TREE.append(merkle.leaf_hash(bytes([i]))))


def nodes(keys: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    return {k: NODES[k] for k in keys}


def roots() -> Roots:
    return Roots(SIGNER.name, [SIGNER.verifier], "--trusted-key: ledger.vkey")


def note(size: int, root: bytes | None = None, signer: NoteSigner = SIGNER) -> str:
    return Checkpoint(SIGNER.name, size, root or merkle.root(size, nodes)).sign(signer)


def proven(size: int) -> Prove:
    return lambda old: merkle.consistency_proof(old, size, nodes)


@pytest.fixture
def archive(tmp_path: Path) -> Archive:
    kept = Archive(tmp_path / "kept", roots())
    kept.keep(note(5), proven(5))
    kept.keep(note(9), proven(9))
    return kept


def test_notes_are_kept_one_file_each_and_read_back(archive: Archive, tmp_path: Path) -> None:
    names = sorted(p.name for p in (tmp_path / "kept").iterdir())
    assert [n.rsplit(".", 2)[1] for n in names] == ["000000000005", "000000000009"]
    again = Archive(tmp_path / "kept", roots())
    latest = again.latest(SIGNER.name)
    assert latest is not None and latest.checkpoint.size == 9


def test_a_note_seen_before_is_not_written_again(archive: Archive, tmp_path: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "kept").iterdir()}
    archive.keep(note(9), lambda old: None)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "kept").iterdir()} == before


def test_a_note_of_its_log_no_trusted_key_signed_fails_naming_its_size_and_key(
    archive: Archive, tmp_path: Path
) -> None:
    stranger = NoteSigner(SIGNER.name, Ed25519PrivateKey.generate())
    with pytest.raises(
        UntrustedError, match=rf"tree size 12: .*signed by key id {stranger.verifier.key_id.hex()}"
    ):
        archive.keep(note(12, signer=stranger), proven(12))
    assert len(list((tmp_path / "kept").iterdir())) == 2


def test_a_note_of_another_log_is_passed_over(archive: Archive, tmp_path: Path) -> None:
    stranger = NoteSigner("elsewhere.example/log", Ed25519PrivateKey.generate())
    assert archive.keep(Checkpoint(stranger.name, 3, bytes(32)).sign(stranger), proven(3)) is None
    assert len(list((tmp_path / "kept").iterdir())) == 2


def test_a_rotated_key_is_learned_kept_and_trusted_again_only_with_its_cosigned_note(
    archive: Archive, tmp_path: Path
) -> None:
    rotated = NoteSigner(SIGNER.name, Ed25519PrivateKey.generate())
    handover = Checkpoint(SIGNER.name, 12, merkle.root(12, nodes)).sign(SIGNER, rotated)
    archive.learn([(12, handover)], [rotated.verifier.encode()])
    assert archive.keep(handover, proven(12)) is not None
    assert archive.keep(note(14, signer=rotated), proven(14)) is not None
    assert (tmp_path / "kept" / LEARNED).read_text() == rotated.verifier.encode() + "\n"
    again = Archive(tmp_path / "kept", roots())  # a later run, given the old key only
    assert rotated.verifier in again.roots.keys
    latest = again.latest(SIGNER.name)
    assert latest is not None and latest.checkpoint.size == 14
    # Without the note that shows the cosignature, the learned key is not trusted.
    next((tmp_path / "kept").glob("*.000000000012.note")).unlink()
    with pytest.raises(ArchiveError, match="no signature by a trusted ledger key"):
        Archive(tmp_path / "kept", roots())


def test_the_tree_must_still_give_the_root_of_the_largest_note_kept(archive: Archive) -> None:
    archive.check_root(SIGNER.name, lambda size: merkle.root(size, nodes), "the ledger")
    with pytest.raises(
        ForkError, match=r"rewritten: at tree size 9 the tree of the ledger gives another root"
    ):
        archive.check_root(SIGNER.name, lambda size: b"\x07" * 32, "the ledger")


def test_without_a_proof_from_the_last_kept_size_it_says_so(
    archive: Archive, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "coi.monitor"):
        archive.keep(note(12), lambda old: None)
    assert "NOT checked against size 9" in caplog.text


def test_two_roots_for_one_size_is_a_fork_naming_both_files(archive: Archive) -> None:
    with pytest.raises(
        ForkError, match=r"fork: two checkpoints .* tree size 9 .*\.000000000009\.note and .*fork-"
    ):
        archive.keep(note(9, root=b"\x07" * 32), proven(9))


def test_a_proof_that_fails_is_a_fork(archive: Archive) -> None:
    with pytest.raises(ForkError, match=r"tree size 12 .* is not consistent with the one kept at 9"):
        archive.keep(note(12, root=b"\x07" * 32), proven(12))


def test_a_smaller_size_than_one_kept_is_a_rollback(archive: Archive) -> None:
    with pytest.raises(ForkError, match=r"rollback: .* at tree size 7 .* after one at 9"):
        archive.keep(note(7), proven(7))
