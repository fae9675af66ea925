"""Read models for auditors, built only by reading the ledger's stored envelopes."""
