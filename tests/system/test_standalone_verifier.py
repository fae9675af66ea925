"""The verifier stands alone: `ledger.audit.verification` imports and verifies a ledger in a
process where eventsourcing, psycopg and kafka cannot be imported, reading through a record
source written here with nothing but sqlite3 (an auditor's own reader would do the same)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.transparency.checkpoint import NoteSigner
from tests.support import sealed_ledger

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = ("eventsourcing", "psycopg", "psycopg_pool", "kafka")

# Run first in a child process: block the imports of BLOCKED (its first argument is JSON:
# BLOCKED, the modules allowed to import them, then the child's own arguments).
BLOCKER = r"""
import json, sys

BLOCKED, ALLOWED_IMPORTERS, *ARGUMENTS = json.loads(sys.argv[1])
let_through = []


def importer():
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(
        ("importlib", "_frozen_importlib")
    ):
        frame = frame.f_back
    return frame.f_globals.get("__name__", "") if frame is not None else ""


class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in BLOCKED:
            return None
        who = importer()
        if who.startswith(tuple(ALLOWED_IMPORTERS) + tuple(BLOCKED)):
            let_through.append(f"{who} -> {name}")
            return None
        raise ImportError(f"{name} is blocked (imported by {who})")


sys.meta_path.insert(0, Block())
"""

# Run in the child: read the ledger with sqlite3 alone, verify it.
CHILD = (
    BLOCKER
    + r"""
import sqlite3

path, trusted = ARGUMENTS

from ledger.audit.source import Chunk, StoredCheckpoint
from ledger.audit.verification import LedgerVerifier
from ledger.transparency.checkpoint import NoteVerifier
from ledger.transparency.records import row_record


class PlainSource:
    def __init__(self, path):
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)

    def checkpoints(self):
        rows = self.db.execute("SELECT * FROM coi_checkpoints ORDER BY tree_size")
        return [StoredCheckpoint(*row) for row in rows]

    def chunk(self, after, start, limit):
        rows = self.db.execute(
            "SELECT rowid, originator_id, originator_version, state FROM stored_events "
            "WHERE rowid > ? ORDER BY rowid LIMIT ?", (after, limit)
        ).fetchall()
        stop = start + len(rows)
        leaves = dict(self.db.execute(
            "SELECT leaf_index, sequence FROM coi_leaves WHERE leaf_index BETWEEN ? AND ?", (start, stop - 1)
        ))
        nodes = [
            dict(self.db.execute(
                "SELECT idx, hash FROM coi_nodes WHERE level = ? AND idx >= ? AND idx <= ?",
                (level, start >> level, (stop >> level) - 1),
            ))
            for level in range(stop.bit_length())
        ]
        return Chunk(rows, leaves, nodes)

    sequence = staticmethod(lambda row: row[0])
    record = staticmethod(row_record)

    def size(self):
        return self.db.execute("SELECT COUNT(*) FROM coi_leaves").fetchone()[0]

    def leaf_sequence(self, leaf_index):
        row = self.db.execute("SELECT sequence FROM coi_leaves WHERE leaf_index = ?", (leaf_index,))
        row = row.fetchone()
        return row and row[0]


report = LedgerVerifier(PlainSource(path), [NoteVerifier.decode(trusted)]).run()
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({
    "failure": str(report.failure) if report.failure else None, "records": report.records,
    "checkpoints": report.checkpoints, "let_through": sorted(set(let_through)), "loaded": loaded,
}))
"""
)


@pytest.fixture(scope="module")
def small_ledger(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, NoteSigner, int]:
    """A registered cast and two patients' journeys under a signed checkpoint, in SQLite."""
    path = tmp_path_factory.mktemp("standalone") / "ledger.sqlite"
    signer, size = sealed_ledger(f"sqlite:///{path}")
    return path, signer, size


def _verify_alone(ledger: tuple[Path, NoteSigner, int], allowed: tuple[str, ...]) -> dict[str, object]:
    path, signer, _ = ledger
    arguments = json.dumps([BLOCKED, allowed, str(path), signer.verifier.encode()])
    done = subprocess.run(
        [sys.executable, "-c", CHILD, arguments], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_the_verifier_stands_alone(small_ledger: tuple[Path, NoteSigner, int]) -> None:
    result = _verify_alone(small_ledger, ())
    assert result["failure"] is None and result["records"] == small_ledger[2], result
    assert result["loaded"] == [], result["loaded"]
