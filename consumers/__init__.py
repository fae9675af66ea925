"""Kafka services around the ledger (ingest, relay, projector)."""

# The services `coi run NAME` starts; here, not in consumers.pipeline, so that building the
# command line's parser imports no Kafka client.
SERVICES = ("ingest", "relay", "projector")
