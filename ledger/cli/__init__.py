"""The `coi` command: the argparse tree and the dispatch; each command group is a module here.

Exit codes: 0 ok, 1 a check failed (verification, or an outcome that was not the expected
one), 2 usage or input error (including rejected submissions).

A group module `ledger/cli/NAME.py` has `add_parser(subparsers) -> None`, which adds its
commands, and `run(args) -> int`, which runs any of them, writing to `sys.stdout`; it is
registered in GROUPS. `coi --help` imports every group to list their commands, so a group
imports only what ledger/cli/common.py allows at module level, and what its commands need
inside `run`: `coi --help` and `coi schema` then start without the event store, the
database drivers or Kafka (benchmarks/startup.py times them).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys

from ledger.cli.common import EXIT_OK, EXIT_USAGE, TYPE_CHECKING, printable, say
from ledger.wire.rejection import Rejected

if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any, TextIO

__all__ = ["main", "parser", "printable"]

# The command groups, in the order `coi --help` lists them: each a module of this package
# and the commands it adds. Registering a group is one line here.
GROUPS = (
    ("records", "init", "sign", "cosign", "submit"),
    ("session", "session"),
    ("keys", "keys"),
    ("principals", "principals"),
    ("sites", "sites"),
    ("schema", "schema"),
    ("history", "history"),
    ("audit", "find", "audit"),
    ("verify", "checkpoint", "prove", "verify"),
    ("trust", "trust"),
    ("export", "export", "verify-bundle"),
    ("publish", "publish"),
    ("services", "up", "run", "broker"),
    ("witness", "witness"),
    ("projections", "projections"),
    ("demo", "demo"),
    ("policy", "policy"),
    ("security", "security"),
    ("migrate", "migrate"),
)

# Errors whose message says what to do: printed as `coi: MESSAGE` with exit 2, never a
# traceback. Named by module, so that catching them imports nothing (an error whose module
# was never imported cannot have been raised); tests/test_cli_shape.py checks each name.
SAID_ERRORS = (
    ("ledger.cli.common", "UsageError"),
    ("ledger.audit.source", "SchemaError"),
    ("ledger.wire.config", "ConfigError"),
    ("ledger.wire.keys", "KeyFileError"),
    ("ledger.demo.run", "DemoError"),
    ("ledger.transparency.checkpoint", "NoteError"),
    ("consumers.broker", "BrokerError"),
    ("ledger.wire.files", "ExposedFileError"),
    ("ledger.audit.trust", "TrustError"),
    ("ledger.app.ledgerkey", "NoLedgerKeyError"),
    ("ledger.app.ledgerkey", "OriginInUseError"),
    ("ledger.app.ledgerkey", "RotationError"),
    ("projections.queries", "QueryError"),
    ("projections.export.build", "ExportError"),
)


def _raised(exc: BaseException, module: str, name: str) -> bool:
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(exc, getattr(loaded, name))


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole tree; or, for the command being run, only its group, that command in full and
    the group's others listed; for no command or an unknown one, every command listed (its
    name and help, what `coi --help` and argparse's error show). argparse spends most of a
    short command's start building parsers it will not use."""
    p = _Parser(prog="coi", description="Chain-of-identity and custody ledger.")
    sub = p.add_subparsers(dest="command", required=True)
    owner = [group for group in GROUPS if command in group[1:]]
    for name, *_ in owner or GROUPS:
        group = importlib.import_module(f"{__name__}.{name}")
        before = set(sub.choices)
        group.add_parser(sub if command is None else _Listing(sub, command))
        for added in sub.choices.keys() - before:
            sub.choices[added].set_defaults(coi_group=group)
    return p


class _Formatter(argparse.HelpFormatter):
    """argparse's help layout, with the terminal's width found without importing shutil
    (argparse imports it, with bz2 and lzma, to ask: 5 ms of `coi schema`)."""

    def __init__(self, prog: str, **kwargs: Any) -> None:
        if kwargs.get("width") is None:
            kwargs["width"] = _columns() - 2  # as argparse leaves a margin
        super().__init__(prog, **kwargs)


def _columns() -> int:
    """The terminal's width, as shutil.get_terminal_size says it: COLUMNS, else the terminal
    on standard output, else 80."""
    with contextlib.suppress(KeyError, ValueError):
        if (columns := int(os.environ["COLUMNS"])) > 0:
            return columns
    with contextlib.suppress(AttributeError, ValueError, OSError):
        if sys.__stdout__ and (columns := os.get_terminal_size(sys.__stdout__.fileno()).columns) > 0:
            return columns
    return 80


class _Parser(argparse.ArgumentParser):
    """Every parser of `coi`: subparsers are made of the class of their parent (argparse's
    add_subparsers), so each group's commands get the formatter too."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(**kwargs)


class _Listing:
    """The subparsers as a group module sees them when one command is run: that command is
    built in full; any other is listed, and what the group adds to it is dropped."""

    def __init__(self, subparsers: argparse._SubParsersAction[_Parser], command: str):
        self._subparsers = subparsers
        self._command = command

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if name == self._command:
            return self._subparsers.add_parser(name, **kwargs)
        self._subparsers.add_parser(name, help=kwargs.get("help"), add_help=False)
        return _Dropped()


class _Dropped:
    """Takes any call (add_argument, add_subparsers, set_defaults...) and does nothing."""

    def __getattr__(self, name: str) -> Any:
        return self._drop

    def _drop(self, *args: Any, **kwargs: Any) -> _Dropped:
        return self


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """Run `coi` with `argv` (default: the process's arguments), its output (help included) to
    `out` (default: standard output); returns the exit code."""
    with contextlib.redirect_stdout(out) if out is not None else contextlib.nullcontext():
        return _run(sys.argv[1:] if argv is None else argv)


def _run(argv: list[str]) -> int:
    command = next((a for a in argv if not a.startswith("-")), "")  # `coi` itself takes -h only
    args = parser(command).parse_args(argv)
    group: ModuleType = args.coi_group
    try:
        return int(group.run(args))
    except KeyboardInterrupt:
        print("coi: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `coi history X | head`: the reader has all it wanted
        sys.stderr.close()
        return EXIT_OK
    except Rejected as exc:
        where = f" [{exc.field}]" if exc.field else ""
        say(f"coi: rejected {exc.code}: {exc.message}{where}", sys.stderr)
    except Exception as exc:
        if not any(_raised(exc, module, name) for module, name in SAID_ERRORS):
            raise
        from ledger.app.config import redact

        say(f"coi: {redact(str(exc))}", sys.stderr)
    return EXIT_USAGE
