"""The participant's contract fuzzed where participants meet it: schemathesis, every check,
against openapi/sandbox.json and the real gateway, every service in-process behind it, as a fuzz
participant the regulator admits for the run (its key on every case, and a Sandbox Bank TPP
token for the open-banking consent operations; those needing a PSU's token answer 401/403)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from contextlib import ExitStack
from functools import cache
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from sandbox.contracts import OPENAPI_DIR
from tests.support.gateway_fuzz import EXCLUDED_PATH_REGEX, participant_headers, sandbox_in_process

MAX_EXAMPLES = 8
HYPOTHESIS = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)

_running = ExitStack()
atexit.register(_running.close)


@cache
def _stack() -> tuple[str, dict[str, str]]:
    """The sandbox, started once for the whole run (on first use, so collection stays cheap)."""
    scratch = Path(tempfile.mkdtemp(prefix="gateway-fuzz-"))
    _running.callback(shutil.rmtree, scratch, True)
    # The keyless-flood budget (429 after 30 a minute from one address, tests/gateway) raised, so
    # each case without a key meets the 401 it is documented to get.
    base = _running.enter_context(sandbox_in_process(
        scratch, unauthenticated_per_minute=100_000, unauthenticated_burst=100_000))
    return base, participant_headers(base)


schema = schemathesis.openapi.from_path(OPENAPI_DIR / "sandbox.json").exclude(path_regex=EXCLUDED_PATH_REGEX)


@schema.auth.auth(refresh_interval=None, retry_on=[])
class FuzzParticipant:
    """The participant's credentials as schemathesis' auth, so a case that leaves out the key on
    purpose (a negative case, the ignored_auth check) is sent without it."""

    def get(self, case, ctx) -> dict[str, str]:  # type: ignore[no-untyped-def]
        return _stack()[1]

    def set(self, case, data: dict[str, str], ctx) -> None:  # type: ignore[no-untyped-def]
        case.headers = {**(case.headers or {}), **data}


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, **HYPOTHESIS)
def test_the_participant_contract_through_the_gateway(case) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(base_url=_stack()[0])
