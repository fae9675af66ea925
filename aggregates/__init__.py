"""The domain: eventsourcing aggregates and the rules they enforce."""
