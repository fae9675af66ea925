"""Kafka services around the ledger (ingest, relay, projector)."""
