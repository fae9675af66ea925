"""The policy records as one stream of their own, stored like a principal's: one verbatim
signed envelope per event, chained (aggregates/base.py). The rules are in aggregates/policy.py."""

from __future__ import annotations

from uuid import NAMESPACE_URL, uuid5

from aggregates.base import Ledgered
from aggregates.policy import PolicyState, evolve
from ledger.wire.events import Event, PolicyAdopted

POLICY_STREAM = uuid5(NAMESPACE_URL, "https://coi-ledger.example/policy")


class PolicyStream(Ledgered):
    """Every policy record of the ledger, in log order; `state` is the policy in force."""

    def mutate(self, body: Event) -> None:
        assert isinstance(body, PolicyAdopted), body
        self.state: PolicyState = evolve(self.__dict__.get("state", PolicyState()), body)
