"""`coi keys new`: an Ed25519 key file and its public half."""

from __future__ import annotations

import argparse

from ledger.cli.common import (
    EXIT_OK,
    TYPE_CHECKING,
    UsageError,
    add_passphrase_fd,
    new_key_path,
    new_passphrase,
)

if TYPE_CHECKING:
    from ledger.cli.common import Subparsers


def add_parser(subparsers: Subparsers) -> None:
    keys = subparsers.add_parser("keys", help="key files").add_subparsers(dest="keys_command", required=True)
    s = keys.add_parser("new", help="make an Ed25519 key pair")
    s.add_argument("--principal", required=True)
    s.add_argument("--name", required=True, help="printed name (for a device: its label)")
    s.add_argument("--kind", choices=["person", "device", "site_system"], default="person")
    s.add_argument("--out", help="private key file (default: coi-data/keys/ID.key)")
    s.add_argument("--no-passphrase", action="store_true", help="devices and site systems only")
    add_passphrase_fd(s)


def run(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ledger.wire.identifiers import PRINCIPAL_ID_PATTERN
    from ledger.wire.keys import key_file_for, write_key_file

    # `keys new` is the group's one command.
    if not PRINCIPAL_ID_PATTERN.fullmatch(args.principal):
        raise UsageError(
            f"--principal {args.principal!r}: a principal id is 2-64 of a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit (e.g. nurse.kim)"
        )
    if args.kind == "person" and args.no_passphrase:
        raise UsageError("a person's key must be encrypted (Part 11.200: key file + passphrase)")
    passphrase = None if args.no_passphrase else new_passphrase(args.principal, args.kind, args.passphrase_fd)
    path = new_key_path(args.out, args.principal, "--out")
    key_file = key_file_for(Ed25519PrivateKey.generate(), args.principal, args.name, args.kind, passphrase)
    pub = write_key_file(path, key_file)
    print(f"private key: {path} (mode 0600{', encrypted' if passphrase else ''})")
    print(f"public key:  {pub}  <- give this file to an administrator")
    print(f"keyid:       {key_file.keyid}")
    return EXIT_OK
