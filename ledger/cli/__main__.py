"""`python -m ledger.cli`: the `coi` command."""

from ledger.cli import main

raise SystemExit(main())
