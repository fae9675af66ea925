"""What the coi command prints and reads, checked without a process: terminal escaping, lenient keying."""

from __future__ import annotations

from ledger import cli
from ledger.site.publisher import _identify
from tests.support import DEEP


def test_terminal_text_escapes_controls_and_bidi_overrides() -> None:
    assert cli.printable("a\nb\x1b[2Kc\x9bd\u202ee\tf\u2028") == "a\\nb\\x1b[2Kc\\x9bd\\u202ee\\tf\\u2028"
    assert cli.printable("Zoë Ngũgĩ, 山田") == "Zoë Ngũgĩ, 山田"


def test_publish_keys_deeply_nested_bytes_by_their_digest() -> None:
    # `coi publish` reads each line leniently to key it; the ledger then refuses it with a reason.
    deep = ('{"payload": ' + DEEP + "}").encode()
    event_id, key, digest, _ = _identify(deep)
    assert (event_id, key) == (f"sha256:{digest}", "unreadable")
