"""Who is calling a service: a sandbox participant (named by the gateway) or a direct caller.

The gateway authenticates the participant's key and forwards its id in `X-Sandbox-Participant`
(it strips that header from what participants send, so it cannot be forged through the door).
A service uses it to keep each participant to its own customers' resources:

- a direct caller (no header: a developer on the service's own port, a test) sees everything;
- a *mandated* participant sees everything too: the sandbox's own services, which act on a
  mandate their own APIs check (a loan agreement, an investor's funding order, a PSU's consent),
  and the gateway's own look-ups for screening;
- any other participant sees what it opened, and what was opened directly (no owner).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

PARTICIPANT_HEADER = "x-sandbox-participant"


@dataclass(frozen=True)
class Caller:
    participant_id: str | None  # None: called directly, not through the gateway
    mandated: bool = False

    @property
    def restricted(self) -> bool:
        return self.participant_id is not None and not self.mandated

    def may_use(self, owner: str | None) -> bool:
        """Whether this caller may read or act on a resource that `owner` opened."""
        return not self.restricted or owner is None or owner == self.participant_id


DIRECT_CALLER = Caller(None)


def caller_of(request: Request) -> Caller:
    participant = request.headers.get(PARTICIPANT_HEADER) or None
    if participant is None:
        return DIRECT_CALLER
    mandated = getattr(request.app.state.settings, "mandated_participants", ())
    return Caller(participant, participant in mandated)


async def current_caller(request: Request) -> Caller:
    # `async def`: no IO here, so no threadpool hop (FastAPI runs a plain `def` in a thread).
    return caller_of(request)


CallerDep = Annotated[Caller, Depends(current_caller)]
