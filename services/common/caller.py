"""Who is calling a service: a sandbox participant (named by the gateway) or a direct caller.

The gateway authenticates the participant's key and forwards its id in `X-Sandbox-Participant`
(it strips every `X-Sandbox-*` header participants send, so neither can be forged through the
door). When one of the sandbox's own services calls another through the gateway for a
participant (the advisor funding Demo Robo's customer's portfolio, credit collecting Demo
Lender's repayment), it names that participant in `X-Sandbox-On-Behalf-Of`; the gateway passes
it on only from a service key, and counts, limits and screens the movement as that participant's.

A service uses the two to keep each participant to its own customers' resources:

- a direct caller (no header: a developer on the service's own port, a test) sees everything;
- the gateway's own look-ups for screening (`gateway`) read everything and move nothing;
- any other caller sees what it opened, what the participant it acts for opened, and what was
  opened directly (no owner). Debiting someone else's account needs the owner's mandate to
  `authority` (payments keeps mandates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from services.common.demo import GATEWAY_LOOKUPS

PARTICIPANT_HEADER = "x-sandbox-participant"
ON_BEHALF_HEADER = "x-sandbox-on-behalf-of"


@dataclass(frozen=True)
class Caller:
    participant_id: str | None  # None: called directly, not through the gateway
    on_behalf_of: str | None = None  # the originating participant, when a service acts for one

    @property
    def restricted(self) -> bool:
        return self.participant_id is not None and self.participant_id != GATEWAY_LOOKUPS

    @property
    def authority(self) -> str | None:
        """Whose mandates a debit by this caller relies on: the originator it acts for, else itself."""
        return self.on_behalf_of or self.participant_id

    def may_use(self, owner: str | None) -> bool:
        """Whether this caller may read or act on a resource that `owner` opened."""
        return (not self.restricted or owner is None or owner == self.participant_id
                or (self.on_behalf_of is not None and owner == self.on_behalf_of))


DIRECT_CALLER = Caller(None)


def caller_of(request: Request) -> Caller:
    participant = request.headers.get(PARTICIPANT_HEADER) or None
    if participant is None:
        return DIRECT_CALLER
    return Caller(participant, request.headers.get(ON_BEHALF_HEADER) or None)


async def current_caller(request: Request) -> Caller:
    # `async def`: no IO here, so no threadpool hop (FastAPI runs a plain `def` in a thread).
    return caller_of(request)


CallerDep = Annotated[Caller, Depends(current_caller)]
