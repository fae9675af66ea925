"""`coi trust add|list|remove`: the per-user trust store of log verifier keys; and how
`coi verify` takes its roots from it (ledger/audit/roots.py), learns, and keeps its state."""

from __future__ import annotations

import argparse
import sys

from ledger.cli.common import EXIT_OK, TYPE_CHECKING, UsageError, add_format, say

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from ledger.audit.roots import Roots
    from ledger.cli.common import Subparsers
    from ledger.store.sources import SqlSource


def add_parser(subparsers: Subparsers) -> None:
    s = subparsers.add_parser("trust", help="the log verifier keys you trust (your trust store)")
    actions = s.add_subparsers(dest="action", required=True)
    a = actions.add_parser("add", help="trust a log's verifier key file (.vkey) for the log it names")
    a.add_argument("file", help="a .vkey file, one verifier key per line")
    listing = actions.add_parser("list", help="the logs and keys you trust")
    add_format(listing)
    r = actions.add_parser("remove", help="forget a log (by origin) or one key (by key id)")
    r.add_argument("what", help="an origin, e.g. coi-ledger.local/3f2a..., or a key id in hex")


def run(args: argparse.Namespace) -> int:
    from ledger.audit.trust import TrustStore, fingerprint, read_keys

    store = TrustStore()
    if args.action == "add":
        from pathlib import Path

        keys = read_keys(Path(args.file))
        if not keys:
            raise UsageError(f"{args.file}: no verifier key in it (expected NAME+KEYID+BASE64 lines)")
        for key in keys:
            added = store.add(key.name, key)
            say(f"{'trusted' if added else 'already trusted'}: log {key.name}, {fingerprint(key)}")
        print(f"trust store: {store.path}", file=sys.stderr)
        return EXIT_OK
    if args.action == "remove":
        gone = store.remove(args.what)
        if not gone:
            raise UsageError(f"no entry for {args.what!r} in {store.path}; see coi trust list")
        for entry in gone:
            say(f"removed: log {entry.origin}, {fingerprint(entry.verifier)}")
        return EXIT_OK
    entries = store.entries()
    if args.format == "json":
        import msgspec

        rows = [
            {"origin": e.origin, "key_id": e.verifier.key_id.hex(), "verifier_key": e.verifier.encode()}
            for e in entries
        ]
        sys.stdout.write(msgspec.json.encode(rows).decode() + "\n")
        return EXIT_OK
    if not entries:
        print(f"no trusted logs in {store.path}; add one with coi trust add FILE.vkey", file=sys.stderr)
    for e in entries:
        say(f"{e.origin}  {e.verifier.key_id.hex()}  {e.verifier.encode()}")
    return EXIT_OK


# ------------------------------------------------------------------ coi verify's roots


def roots_for(files: list[Path], source: Callable[[], SqlSource]) -> tuple[Roots, SqlSource]:
    """The roots for the ledger `source()` opens, with every key they let it learn."""
    from ledger.audit.roots import choose, learn
    from ledger.audit.trust import TrustStore

    opened: list[SqlSource] = []

    def origin() -> str:
        opened.append(source())
        return opened[0].origin()

    roots = choose(files, TrustStore(), origin)
    learn(roots, [(c.size, c.note) for c in opened[0].checkpoints()], opened[0].ledger_keys())
    return roots, opened[0]


def first_use(source: SqlSource, roots: Roots) -> None:
    """Trusts, for this run, the keys that sign the log's first checkpoint, said loudly: it
    trusts whoever could write the data folder until now. keep_learned records them."""
    from ledger.audit import roots as trust_roots
    from ledger.audit.trust import TrustStore, fingerprint

    checkpoints = source.checkpoints()
    published = source.ledger_keys()
    keys = trust_roots.first_use(roots.origin, checkpoints[0].note, published) if checkpoints else []
    if not keys:
        raise UsageError(
            f"nothing to trust on first use: the log {roots.origin} has no first checkpoint signed by a "
            "key it publishes; get its verifier key from its operator and pass --trusted-key FILE"
        )
    for key in keys:
        say(
            f"TRUST ON FIRST USE: log {roots.origin}, {fingerprint(key)} signs its first checkpoint "
            f"(size {checkpoints[0].size}). This trusts whoever held the data until now: compare the "
            "key id with the one the ledger's operator gives you.",
            sys.stderr,
        )
    roots.store = roots.store or TrustStore()
    roots.keys.extend(keys)
    roots.first_use = keys
    ids = ", ".join(k.key_id.hex() for k in keys)
    roots.described = f"trust on first use (origin {roots.origin}): key ids {ids}"
    trust_roots.learn(roots, [(c.size, c.note) for c in checkpoints], published)


def keep_learned(roots: Roots) -> None:
    """After a clean run: records the keys trusted on first use, and says each key learned
    from a rotation, which a trust store keeps."""
    from ledger.audit.trust import fingerprint

    for key in roots.first_use:
        if roots.store is not None and roots.store.add(roots.origin, key):
            say(
                f"TRUSTED ON FIRST USE: log {roots.origin}, {fingerprint(key)}; "
                f"recorded in {roots.store.path}",
                sys.stderr,
            )
    for key, size in roots.learned:
        where = ""
        if roots.store is not None and roots.store.add(roots.origin, key):
            where = f"; added to {roots.store.path}"
        say(
            f"learned: log {roots.origin}, {fingerprint(key)}, "
            f"cosigned by a trusted key at size {size}{where}",
            sys.stderr,
        )


def state_file(origin: str) -> Path:
    """Where `coi verify --incremental` keeps its state: with the verifier (the config dir),
    never in the data folder, one file per log and database."""
    import hashlib
    from pathlib import Path
    from urllib.parse import quote

    from ledger.app.config import database_url
    from ledger.audit.trust import config_dir
    from ledger.store.sql import is_postgres, sqlite_path

    url = database_url()
    where = url if is_postgres(url) else str(Path(sqlite_path(url)).resolve())
    digest = hashlib.sha256(where.encode()).hexdigest()[:16]
    return config_dir() / "verify-state" / f"{quote(origin, safe='')}-{digest}.json"
