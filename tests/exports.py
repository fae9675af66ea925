"""The demo ledger the genealogy export tests share: `coi demo` run once as a process, then
`coi export genealogy` run against it as a regulator would, for each patient and format."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path
from typing import Any

from ledger.audit.bundle_format import RECORDS
from ledger.transparency.records import Record, payload_of
from tests.support import coi

# What `coi demo` prints as each patient's outcome (ledger/demo/run.py OUTCOMES), by what the
# export tests call them.
JOURNEYS = {
    "corrected": "a record corrected",
    "rejected": "batch rejected",
    "excursion": "excursion",
    "mismatch": "bedside mismatch",
    "retest": "retest conforms",
}


class ExportDemo:
    """`coi demo` in `folder`, with the demo's trust store; each journey's COI by its name."""

    def __init__(self, folder: Path, patients: int = 5, **env: str) -> None:
        self.folder, self.env = folder, env
        done = self.run("demo", "--patients", str(patients))
        assert done.returncode == 0, done.stdout + done.stderr
        self.printed = done.stdout
        rows = [line.split(None, 2) for line in done.stdout.splitlines()[1 : patients + 1]]
        self.cois = [row[1] for row in rows]
        self.outcomes = {row[1]: row[2] for row in rows}

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        settings = {"COI_CONFIG_DIR": str(self.folder / "coi-config"), **self.env, **env}
        return coi(self.folder, *args, **settings)

    def journey(self, name: str) -> str:
        """The COI of the first patient whose outcome names `name`'s text (JOURNEYS)."""
        text = JOURNEYS.get(name, name)
        return next(c for c, outcome in self.outcomes.items() if text in outcome)

    def export(self, fmt: str, *pick: str, out: str | None = None, **env: str) -> Path:
        """`coi export genealogy PICK --format FMT --out FILE`, which must succeed; FILE."""
        suffix = "zip" if fmt == "csv" else fmt  # a zip of CSV tables
        path = self.folder / (out or f"{'-'.join(p.strip('-') for p in pick)}.{suffix}")
        done = self.run("export", "genealogy", *pick, "--format", fmt, "--out", str(path), **env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        return path

    def refused(self, *args: str) -> str:
        """The message of a command that must exit 2 having written nothing to standard output."""
        done = self.run(*args)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "Traceback" not in done.stderr and done.stdout == ""
        return done.stderr


def bundle_bodies(bundle: Path) -> dict[int, dict[str, Any]]:
    """Sequence -> the signed body of each record in a bundle (its JSON, as signed)."""
    bodies = {}
    with zipfile.ZipFile(bundle) as z:
        for name in z.namelist():
            if name.startswith(RECORDS):
                record = json.loads(z.read(name), object_hook=None)
                envelope = Record(**record).envelope
                bodies[int(name[len(RECORDS) :].removesuffix(".json"))] = json.loads(payload_of(envelope))
    return bodies


def facts(document: object) -> list[dict[str, Any]]:
    """Every Fact (value, sequence, field) anywhere in a genealogy document."""
    found = []
    if isinstance(document, dict):
        if document.keys() == {"value", "sequence", "field"}:
            return [document]
        for value in document.values():
            found.extend(facts(value))
    elif isinstance(document, list):
        for value in document:
            found.extend(facts(value))
    return found
