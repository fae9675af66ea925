"""`coi session start|status|stop`: a signing session (Part 11.200(a)(1)), a person's key held
by a local agent after both components, each later signature after the passphrase again."""

from __future__ import annotations

import argparse
import os
import sys

from ledger.cli.common import EXIT_OK, TYPE_CHECKING, UsageError, add_passphrase_fd

if TYPE_CHECKING:
    from typing import Literal

    from ledger.cli.common import Subparsers
    from ledger.site.agent import AgentReply

LONGEST_IDLE_MINUTES = 8 * 60


def add_parser(subparsers: Subparsers) -> None:
    group = subparsers.add_parser("session", help="a signing session: a person's key held by a local agent")
    commands = group.add_subparsers(dest="session_command", required=True)
    s = commands.add_parser(
        "start", help="open the key (key file and passphrase) and print the COI_SIGNING_AGENT line to eval"
    )
    s.add_argument("--key", required=True, help="the person's key file")
    s.add_argument(
        "--idle-timeout", type=int, default=15, metavar="MINUTES",
        help=f"end the session after this many minutes without a signature (default 15, at most "
        f"{LONGEST_IDLE_MINUTES})",
    )  # fmt: skip
    add_passphrase_fd(s)
    commands.add_parser("status", help="whose key the session holds and how long until it ends idle")
    commands.add_parser("stop", help="end the session now (the agent forgets the key)")


def run(args: argparse.Namespace) -> int:
    return {"start": _start, "status": _status, "stop": _stop}[args.session_command](args)


def _start(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ledger.audit.trust import config_dir
    from ledger.cli.signers import opened_key
    from ledger.site.agent import AGENT_ENV, Session, agent_folder, start_agent
    from ledger.wire.keys import ask_passphrase, read_public

    if not 1 <= args.idle_timeout <= LONGEST_IDLE_MINUTES:
        raise UsageError(f"--idle-timeout {args.idle_timeout}: give 1 to {LONGEST_IDLE_MINUTES} minutes")
    path = Path(args.key)
    public = read_public(path)
    if public.kind != "person":
        raise UsageError(
            f"{path} is a {public.kind}'s key: a signing session is for a person's key; a "
            f"{public.kind} signs with its key file (coi sign --key FILE)"
        )
    passphrase = ask_passphrase(
        f"Passphrase for {public.principal_id} ({path}): ", public.kind, args.passphrase_fd
    )
    key = opened_key(path, args.passphrase_fd, "coi session start", passphrase)
    session = Session(key, passphrase, args.idle_timeout * 60.0, config_dir())
    socket_path, pid = start_agent(session, agent_folder(config_dir()))
    print(f"{AGENT_ENV}={socket_path}; export {AGENT_ENV};")
    print(
        f"coi: signing session for {key.principal_id} (agent pid {pid}); each signature asks the "
        f"passphrase again; it ends after {args.idle_timeout} minutes without one, at coi session "
        "stop, or when this terminal session ends",
        file=sys.stderr,
    )
    return EXIT_OK


def _ask(op: Literal["identify", "stop"]) -> AgentReply:
    """The signing session's answer to `op`; exit 2 saying why when there is none."""
    from ledger.site.agent import AGENT_ENV, AgentRequest, answered

    path = os.environ.get(AGENT_ENV)
    if not path:
        raise UsageError(f"no signing session: {AGENT_ENV} is not set (coi session start --key FILE)")
    return answered(path, AgentRequest(op))


def _status(args: argparse.Namespace) -> int:
    from ledger.cli.common import say

    reply = _ask("identify")
    say(f"signing session for {reply.principal_id} ({reply.printed_name}), key {reply.keyid}")
    print(f"agent pid {reply.pid}; ends in {reply.idle_left / 60:.1f} minutes without a signature")
    return EXIT_OK


def _stop(args: argparse.Namespace) -> int:
    from ledger.site.agent import AGENT_ENV

    _ask("stop")
    print(f"unset {AGENT_ENV};")
    print("coi: the signing session ended; the agent forgot the key", file=sys.stderr)
    return EXIT_OK
