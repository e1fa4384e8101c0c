"""The demo world every service seeds from: who exists when the sandbox first starts.

One place, so the payments ledger, the bank, the lender, the advisor and the gateway agree on
the same people, accounts and keys. Everything here is synthetic; no real person is named.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DemoAccount:
    id: str
    kind: str  # personal | merchant
    owner_name: str
    currency: str
    opening_balance: str  # decimal string, paid in from the opening-balance account
    role: str  # what the demo uses it for


DEMO_ACCOUNTS: tuple[DemoAccount, ...] = (
    DemoAccount("acc_00000000000000000000000001", "personal", "Li Wei", "CNY", "5000.00",
                "a wallet user who pays by QR and invests"),
    DemoAccount("acc_00000000000000000000000002", "personal", "Zhang Min", "CNY", "1200.00",
                "a friend Li Wei sends red packets to"),
    DemoAccount("acc_00000000000000000000000003", "merchant", "Lanzhou Noodle House", "CNY", "0.00",
                "a merchant taking QR payments"),
    DemoAccount("acc_00000000000000000000000004", "merchant", "Chen's Tea Stall", "CNY", "800.00",
                "a small merchant with no credit history who applies for a 310 loan"),
    DemoAccount("acc_00000000000000000000000005", "merchant", "Sandbox Microloans (lender float)",
                "CNY", "10000000.00", "the credit service disburses loans from here"),
    DemoAccount("acc_00000000000000000000000006", "merchant", "Sandbox Robo-Advisor (custody)",
                "CNY", "0.00", "investor deposits are held here"),
    DemoAccount("acc_00000000000000000000000007", "personal", "Alice Example", "USD", "2500.00",
                "a US customer for cross-currency lessons"),
    DemoAccount("acc_00000000000000000000000008", "personal", "Wang Fang", "CNY", "32000.00",
                "a Sandbox Bank customer (open banking PSU)"),
)


def demo_account(role_owner: str) -> DemoAccount:
    for account in DEMO_ACCOUNTS:
        if account.owner_name == role_owner:
            return account
    raise KeyError(role_owner)


@dataclass(frozen=True)
class DemoParticipant:
    id: str
    name: str
    api_key: str  # a sandbox key: printed by `make run`, stored hashed by the gateway
    services: tuple[str, ...]  # the gateway prefixes this participant may call
    role: str


# Keys are sandbox-only demo values, in the `sbx_` namespace so nobody mistakes them for real.
DEMO_PARTICIPANTS: tuple[DemoParticipant, ...] = (
    DemoParticipant("ptp_00000000000000000000000001", "Demo Wallet Co", "sbx_demo_wallet_key",
                    ("payments",), "a wallet start-up testing P2P and merchant payments"),
    DemoParticipant("ptp_00000000000000000000000002", "Demo TPP Ltd", "sbx_demo_tpp_key",
                    ("open-banking",), "a third-party provider using the bank's APIs"),
    DemoParticipant("ptp_00000000000000000000000003", "Demo Lender", "sbx_demo_lender_key",
                    ("credit",), "a lender's front end calling the credit service"),
    DemoParticipant("ptp_00000000000000000000000004", "Demo Robo", "sbx_demo_robo_key",
                    ("advisor",), "a robo-advice app"),
    # The services themselves move money through the gateway, with keys of their own.
    DemoParticipant("ptp_00000000000000000000000011", "Credit service", "sbx_svc_credit_key",
                    ("payments", "open-banking"), "disburses loans, reads consented data"),
    DemoParticipant("ptp_00000000000000000000000012", "Advisor service", "sbx_svc_advisor_key",
                    ("payments",), "funds investor accounts"),
    DemoParticipant("ptp_00000000000000000000000013", "Open-banking service",
                    "sbx_svc_openbanking_key", ("payments",), "executes PIS payments"),
)

# The regulator's key for /sandbox/... endpoints at the gateway.
DEMO_REGULATOR_KEY = "sbx_regulator_key"

# Which participant key each service uses for its own calls through the gateway.
SERVICE_PARTICIPANT_KEYS: dict[str, str] = {
    "credit": "sbx_svc_credit_key",
    "advisor": "sbx_svc_advisor_key",
    "openbanking": "sbx_svc_openbanking_key",
}
