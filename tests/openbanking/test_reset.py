"""Sandbox Bank's `POST /_sandbox/reset`: consents, codes and tokens go; the seeded PSUs and
TPP clients come back as on a first start."""

from __future__ import annotations

from tests.openbanking.factories import Bank, bearer


def test_open_banking_reset_forgets_consents_and_tokens(bank: Bank) -> None:
    token = bank.ais_token()
    assert bank.get("/v3.1/aisp/accounts", token).status_code == 200
    report = bank.client.post("/_sandbox/reset").json()
    assert report["deleted"]["consents"] == 1 and report["seeded"]["tpp_clients"] >= 1
    assert bank.get("/v3.1/aisp/accounts", token).status_code == 401  # its token went with the reset
    fresh = bank.ais_token()  # the seeded TPP and PSU work as on a first start
    assert bank.client.get("/v3.1/aisp/accounts", headers=bearer(fresh)).status_code == 200
