"""The shape of the `coi` command: groups registered in one list, a lazy start, the schema's
identity, and `--format` on the commands whose output is data."""

from __future__ import annotations

import argparse
import base64
import importlib
import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from ledger import cli
from ledger.demo.journeys import VARIANTS, Cast, Journey
from ledger.wire.events import SCHEMA_ID
from ledger.wire.version import WIRE_FORMAT
from tests.support import passphrase_fd, with_passphrase

# What a short command must not load: the event store, the database drivers, Kafka, the
# cryptography library, the read models, the services and the ledger's own layers above the
# wire format (`consumers` itself holds only the service names).
HEAVY = (
    "eventsourcing", "psycopg", "kafka", "cryptography", "sqlite3", "projections", "aggregates",
    "consumers.", "ledger.app", "ledger.store", "ledger.audit", "ledger.site", "ledger.demo",
    "ledger.transparency",
)  # fmt: skip


LIGHT = {"aggregates", "aggregates.policy"}


def _loaded_by(argv: list[str]) -> list[str]:
    """The modules a fresh interpreter has loaded after running `coi ARGV`."""
    script = (
        "import io, sys\n"
        "from ledger.cli import main\n"
        "try:\n"
        f"    main({argv!r}, io.StringIO())\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('\\n'.join(sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.split()


@pytest.mark.parametrize("argv", [["--help"], ["schema"]])
def test_help_and_schema_start_without_the_service_stack(argv: list[str]) -> None:
    loaded = _loaded_by(argv)
    # `coi policy set`'s flags name the settings and their bounds: aggregates.policy, which
    # imports nothing of the domain or the wire Structs to give them.
    assert [m for m in loaded if m.startswith(HEAVY) and m not in LIGHT] == []
    if argv == ["--help"]:
        assert "msgspec" not in loaded  # nothing to decode or encode


def test_schema_says_which_schema_and_which_wire_format_it_is() -> None:
    out = io.StringIO()
    assert cli.main(["schema"], out) == 0
    schema = json.loads(out.getvalue())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == SCHEMA_ID == f"https://coi-ledger.example/schemas/event/v{WIRE_FORMAT}.json"
    assert schema["x-wire-format"] == WIRE_FORMAT == 1
    assert schema["discriminator"]["propertyName"] == "type" and "$defs" in schema


def test_site_systems_can_validate_every_demo_body_against_the_printed_schema(cast: Cast) -> None:
    """What a site system in another language does: a standard 2020-12 validator, the schema
    as `coi schema` prints it ($id and $refs resolved as any validator resolves them)."""
    out = io.StringIO()
    assert cli.main(["schema"], out) == 0
    validator = Draft202012Validator(json.loads(out.getvalue()))
    validator.check_schema(validator.schema)
    start = datetime.now(UTC) - timedelta(days=30)
    envelopes = [*cast.registrations(start - timedelta(days=1))]
    for index, variant in enumerate(VARIANTS):
        envelopes += [step.envelope for step in Journey(cast, index, start, variant).steps()]
    bodies = [json.loads(base64.b64decode(json.loads(e)["payload"])) for e in envelopes]
    for body in bodies:
        assert not list(validator.iter_errors(body)), body
    assert len({body["type"] for body in bodies}) >= 20  # most event types, not one
    enrolment = next(body for body in bodies if body["type"] == "enrolled")
    assert not validator.is_valid({**enrolment, "wristband": "MRN-000001"})
    assert not validator.is_valid({**enrolment, "type": "enroled"})


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_running_one_command_builds_it_exactly_as_the_whole_tree_does() -> None:
    whole = cli.parser()
    commands = _commands(whole)
    assert set(commands) >= {"init", "keys", "principals", "schema", "verify", "run", "demo"}
    for name, full in commands.items():
        assert _commands(cli.parser(name))[name].format_help() == full.format_help(), name
    for nothing_to_run in ("", "bogus"):  # coi --help, or a mistyped command: all are listed
        listed = cli.parser(nothing_to_run)
        assert list(_commands(listed)) == list(commands)
        assert listed.format_help() == whole.format_help()


def test_each_group_adds_the_commands_registered_for_it_and_can_run_them() -> None:
    registered = [command for _, *group_commands in cli.GROUPS for command in group_commands]
    assert list(_commands(cli.parser())) == registered  # each once, in order
    for name, *group_commands in cli.GROUPS:
        group = importlib.import_module(f"ledger.cli.{name}")
        assert callable(group.run), name
        assert list(_commands(cli.parser(group_commands[0]))) == group_commands, name


def test_the_errors_main_reports_without_a_traceback_exist_where_it_looks() -> None:
    for module, name in cli.SAID_ERRORS:
        error = getattr(importlib.import_module(module), name)
        assert issubclass(error, Exception), (module, name)


def test_a_said_error_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sign", "--key", "x.key", str(tmp_path / "missing.json")], io.StringIO()) == 2
    [said] = capsys.readouterr().err.splitlines()
    assert said.startswith("coi: cannot read ")


def _coi(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with passphrase_fd("correct horse") as fd:
        return cli.main(with_passphrase(argv, fd), out), out.getvalue()


def test_data_as_json_with_format_and_the_old_json_alias(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COI_DATA_DIR", str(tmp_path / "coi-data"))
    monkeypatch.delenv("COI_DATABASE_URL", raising=False)
    keys = tmp_path / "coi-data" / "keys"
    assert _coi("init", "--admin", "admin.jane", "--name", "Jane Admin", "--site", "US-SSF")[0] == 0
    assert _coi("keys", "new", "--principal", "nurse.ito", "--name", "Ito Nurse")[0] == 0
    assert _coi(
        "sites", "add", "--admin-key", str(keys / "admin.jane.key"), "--site", "US-SSF",
        "--code", "US-BDW", "--name", "Bridgewater NJ", "--country", "US", "--time-zone", "America/New_York",
        "--kind", "treatment",
    )[0] == 0  # fmt: skip
    assert _coi(
        "principals", "add", "--admin-key", str(keys / "admin.jane.key"), "--site", "US-SSF",
        "--public-key", str(keys / "nurse.ito.key.pub"), "--role", "enrolment", "--bind-site", "US-BDW",
    )[0] == 0  # fmt: skip

    code, listed = _coi("principals", "list", "--format", "json")
    assert code == 0 and [p["principal_id"] for p in json.loads(listed)] == [
        "admin.jane",
        "ledger.service",
        "nurse.ito",
    ]
    assert _coi("principals", "list")[1].startswith("admin.jane ")

    body = tmp_path / "enrolled.json"
    body.write_text(json.dumps({
        "type": "enrolled", "coi": "CHW04512600Z9Y8", "site": "US-BDW", "actor": "nurse.ito",
        "patient_key": "A" * 43 + "=", "order_id": "ORD-7", "product": "anti-CD19 CAR-T",
        "treatment_site": "US-BDW",
    }))  # fmt: skip
    envelopes = tmp_path / "envelopes.jsonl"
    code, signed = _coi("sign", "--key", str(keys / "nurse.ito.key"), str(body))
    assert code == 0
    envelopes.write_text(signed)
    code, submitted = _coi("submit", str(envelopes), "--format", "json")
    assert code == 0 and json.loads(submitted)["status"] == "accepted", submitted

    code, shown = _coi("history", "CHW04512600Z9Y8", "--format", "json")
    assert code == 0 and [row["type"] for row in json.loads(shown)] == ["enrolled"]
    assert _coi("history", "CHW04512600Z9Y8", "--json") == (0, shown)
    assert _coi("history", "CHW04512600Z9Y8")[1].startswith("#")
