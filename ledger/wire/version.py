"""The version of what the ledger publishes on Kafka (ledger/wire/messages.py).

One integer: the major version. A consumer reads every message of its own format or older,
and refuses a newer one rather than guess at fields it does not know. Messages written
before versions existed carry none, and are format 1."""

WIRE_FORMAT = 1
