"""How a command gets the keys it signs with: key files opened with their passphrase, or the
signing session's key (COI_SIGNING_AGENT). A wrong passphrase is recorded in the user's coi
config folder and slows the next tries down (ledger/site/attempts.py); `coi publish` reports it.

Imported by the commands that sign, inside `run`: nothing heavy at module level.
"""

from __future__ import annotations

import os
import sys

from ledger.cli.common import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from ledger.wire.keys import LoadedKey


def signing_keys(paths: list[str] | None, fd: int | None, command: str) -> list[LoadedKey]:
    """The signing session's key when COI_SIGNING_AGENT is set (its passphrase asked again for
    this signature), then each key file of `paths`, in order."""
    from pathlib import Path

    from ledger.cli.common import UsageError
    from ledger.site.agent import AGENT_ENV, session_key

    agent = os.environ.get(AGENT_ENV)
    keys = [session_key(agent, fd)] if agent else []
    keys += [opened_key(Path(p), fd, command) for p in paths or []]
    if not keys:
        raise UsageError(f"say whose key signs: --key FILE, or a signing session ({AGENT_ENV})")
    return keys


def opened_key(path: Path, fd: int | None, command: str, passphrase: bytes | None = None) -> LoadedKey:
    """The key file at `path` opened (its passphrase `passphrase`, else asked), after the delay
    its recent wrong passphrases ask for; a wrong one is recorded before it is said."""
    from ledger.audit.trust import config_dir
    from ledger.cli.common import now
    from ledger.site.attempts import FailedPassphrase, record_failure, wait_before_check
    from ledger.wire.keys import WrongPassphraseError, load_key, read_public

    public = read_public(path)
    wait_before_check(config_dir(), public.keyid, now(), lambda s: _wait(s, public.principal_id))
    try:
        return load_key(path, passphrase, fd)
    except WrongPassphraseError as wrong:
        try:
            record_failure(config_dir(), FailedPassphrase(public.principal_id, public.keyid, now(), command))
        except OSError as exc:
            raise WrongPassphraseError(f"{wrong} (not recorded in {config_dir()}: {exc.strerror})") from None
        raise


def _wait(seconds: float, principal_id: str) -> None:
    import time

    print(f"coi: recent wrong passphrases for {principal_id}: waiting {seconds:g} s", file=sys.stderr)
    time.sleep(seconds)
