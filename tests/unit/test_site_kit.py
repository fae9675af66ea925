"""The site kit's declared API: every name resolves, and signing loads no Kafka client."""

from __future__ import annotations

import subprocess
import sys

import pytest

import ledger.site


@pytest.mark.parametrize("name", ledger.site.__all__)
def test_every_declared_name_resolves_to_what_its_module_holds(name: str) -> None:
    assert getattr(ledger.site, name) is not None


def test_an_undeclared_name_is_refused_with_the_api() -> None:
    with pytest.raises(AttributeError, match="the site kit is"):
        _ = ledger.site.Member


def test_signing_alone_loads_no_kafka_client() -> None:
    code = "import sys\nfrom ledger.site import sign_json, load_key\nprint('kafka' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
