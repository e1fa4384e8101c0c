"""The demo world every service seeds from: who exists when the sandbox first starts.

One place, so the payments ledger, the bank, the lender, the advisor and the gateway agree on
the same people, accounts and keys. Everything here is synthetic; no real person is named.
"""

from __future__ import annotations

from dataclasses import dataclass


# The participants (below) that hold the demo accounts: only they, and the sandbox's own
# services acting on a customer's mandate, may read or debit them through the gateway.
WALLET_CO = "ptp_00000000000000000000000001"
CREDIT_SERVICE = "ptp_00000000000000000000000011"
ADVISOR_SERVICE = "ptp_00000000000000000000000012"
OPENBANKING_SERVICE = "ptp_00000000000000000000000013"
DEMO_TPP = "ptp_00000000000000000000000002"
DEMO_LENDER = "ptp_00000000000000000000000003"
DEMO_ROBO = "ptp_00000000000000000000000004"
OTHER_TPP = "ptp_00000000000000000000000005"
GATEWAY_LOOKUPS = "gateway"  # the gateway's own name look-ups for sanctions screening (read-only)


@dataclass(frozen=True)
class DemoAccount:
    id: str
    kind: str  # personal | merchant
    owner_name: str
    currency: str
    opening_balance: str  # decimal string, paid in from the opening-balance account
    role: str  # what the demo uses it for
    held_by: str = WALLET_CO  # the participant whose customer this is


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
                "CNY", "10000000.00", "the credit service disburses loans from here", CREDIT_SERVICE),
    DemoAccount("acc_00000000000000000000000006", "merchant", "Sandbox Robo-Advisor (custody)",
                "CNY", "0.00", "investor deposits are held here", ADVISOR_SERVICE),
    DemoAccount("acc_00000000000000000000000007", "personal", "Alice Example", "USD", "2500.00",
                "a US customer for cross-currency lessons"),
    DemoAccount("acc_00000000000000000000000008", "personal", "Wang Fang", "CNY", "32000.00",
                "a Sandbox Bank customer (open banking PSU)", OPENBANKING_SERVICE),
    # --- open banking (Sandbox Bank): more PSU accounts and the bank's own demo merchant ---
    DemoAccount("acc_00000000000000000000000b01", "personal", "Wang Fang", "CNY", "8000.00",
                "Wang Fang's savings account at Sandbox Bank", OPENBANKING_SERVICE),
    DemoAccount("acc_00000000000000000000000b02", "personal", "Zhao Lei", "CNY", "150.00",
                "a Sandbox Bank customer with little money (funds checks say no)", OPENBANKING_SERVICE),
    DemoAccount("acc_00000000000000000000000b03", "personal", "Sun Yue", "CNY", "600.00",
                "the magic PSU whose consents expire a minute after she authorises", OPENBANKING_SERVICE),
    DemoAccount("acc_00000000000000000000000b04", "merchant", "Hutong Coffee", "CNY", "0.00",
                "a merchant Sandbox Bank customers pay (open-banking demo transactions)", OPENBANKING_SERVICE),
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
    api_key: str  # a sandbox key, stored hashed by the gateway; `make run` prints participants' keys
    services: tuple[str, ...]  # the gateway prefixes this participant may call
    role: str
    # "participant": a firm in the sandbox. "service": one of the sandbox's own services, whose
    # calls through the gateway may name the participant they act for (X-Sandbox-On-Behalf-Of);
    # the gateway trusts that header from service keys only.
    kind: str = "participant"


# Keys are sandbox-only demo values, in the `sbx_` namespace so nobody mistakes them for real.
DEMO_PARTICIPANTS: tuple[DemoParticipant, ...] = (
    DemoParticipant(WALLET_CO, "Demo Wallet Co", "sbx_demo_wallet_key",
                    ("payments",), "a wallet start-up testing P2P and merchant payments"),
    DemoParticipant(DEMO_TPP, "Demo TPP Ltd", "sbx_demo_tpp_key",
                    ("open-banking",), "a third-party provider using the bank's APIs"),
    DemoParticipant(DEMO_LENDER, "Demo Lender", "sbx_demo_lender_key",
                    ("credit",), "a lender's front end calling the credit service"),
    DemoParticipant(DEMO_ROBO, "Demo Robo", "sbx_demo_robo_key",
                    ("advisor",), "a robo-advice app"),
    DemoParticipant(OTHER_TPP, "Other TPP Ltd", "sbx_other_tpp_key",
                    ("open-banking",), "a second TPP: it may not use Demo TPP's client, consents or payments"),
    # The services themselves move money through the gateway, with keys of their own (never
    # printed: each service reads its key from its environment). They act for the participant
    # that called them, which the gateway counts, limits and screens; a debit of an account the
    # service does not hold needs the owner's mandate to that participant (payments checks it).
    DemoParticipant(CREDIT_SERVICE, "Credit service", "sbx_svc_credit_key",
                    ("payments", "open-banking"), "disburses loans, reads consented data", "service"),
    DemoParticipant(ADVISOR_SERVICE, "Advisor service", "sbx_svc_advisor_key",
                    ("payments",), "funds investor accounts", "service"),
    DemoParticipant(OPENBANKING_SERVICE, "Open-banking service",
                    "sbx_svc_openbanking_key", ("payments",), "executes PIS payments", "service"),
)

# The regulator's key for /sandbox/... endpoints at the gateway.
DEMO_REGULATOR_KEY = "sbx_regulator_key"


@dataclass(frozen=True)
class DemoMandate:
    """A debit mandate the demo starts with: the account's owner lets another participant debit
    it, within caps, until it expires (payments keeps and checks it)."""

    id: str
    debtor_account_id: str
    grantee_participant_id: str
    max_per_debit: str  # decimal string in the account's currency
    max_per_period: str
    period: str  # day | week | month
    valid_days: int  # from the day the sandbox first starts
    purpose: str


DEMO_MANDATES: tuple[DemoMandate, ...] = (
    DemoMandate("mdt_00000000000000000000000001", "acc_00000000000000000000000001", DEMO_ROBO,
                "5000.00", "20000.00", "month", 365,
                "Li Wei funds her Demo Robo portfolio from her Demo Wallet Co wallet"),
    DemoMandate("mdt_00000000000000000000000002", "acc_00000000000000000000000004", DEMO_LENDER,
                "50000.00", "100000.00", "month", 365,
                "Chen's Tea Stall repays its 310 loans to Demo Lender"),
)

# Which participant key each service uses for its own calls through the gateway.
SERVICE_PARTICIPANT_KEYS: dict[str, str] = {
    "credit": "sbx_svc_credit_key",
    "advisor": "sbx_svc_advisor_key",
    "openbanking": "sbx_svc_openbanking_key",
}


# --- open banking (Sandbox Bank): PSUs, TPP clients, magic values -----------------------------
# Read by services/openbanking only. A PSU's accounts live in the payments ledger (ids above).

OPENBANKING_TEST_OTP = "123456"  # the one-time code every PSU types when authorising a consent


@dataclass(frozen=True)
class DemoPsu:
    id: str  # what the PSU types to log in at the bank's authorise step
    name: str
    account_ids: tuple[str, ...]
    behaviour: str  # normal | reject (refuses every consent) | expire (consents expire in 60 s)
    role: str


DEMO_PSUS: tuple[DemoPsu, ...] = (
    DemoPsu("wangfang", "Wang Fang",
            ("acc_00000000000000000000000008", "acc_00000000000000000000000b01"), "normal",
            "a customer with a current wallet and a savings account, and some history"),
    DemoPsu("zhaolei", "Zhao Lei", ("acc_00000000000000000000000b02",), "normal",
            "a customer with little money: larger payments are rejected"),
    DemoPsu("psu-reject", "Rejecting Ren", (), "reject",
            "magic PSU: rejects every consent at the authorise step"),
    DemoPsu("psu-expire", "Sun Yue", ("acc_00000000000000000000000b03",), "expire",
            "magic PSU: authorises, and the consent expires 60 seconds later (move the clock)"),
)


@dataclass(frozen=True)
class DemoTppClient:
    client_id: str
    client_secret: str  # sandbox-only; stored hashed by the bank
    name: str
    redirect_uri: str
    role: str
    # The participant whose key alone may use this client through the gateway.
    participant_id: str


DEMO_TPP_CLIENTS: tuple[DemoTppClient, ...] = (
    DemoTppClient("tpp_demo", "sbx_demo_tpp_secret", "Demo TPP Ltd",
                  "https://tpp.example/callback", "the TPP of the README walkthrough", DEMO_TPP),
    DemoTppClient("tpp_other", "sbx_other_tpp_secret", "Other TPP Ltd",
                  "https://other-tpp.example/callback", "a second TPP: it may not use the first's consents",
                  OTHER_TPP),
    # The credit service is a TPP in its own right: it creates account-access consents and reads
    # applicants' transactions with this registration (and its own gateway key, sbx_svc_credit_key).
    DemoTppClient("tpp_credit", "sbx_credit_tpp_secret", "Sandbox Microloans (credit service)",
                  "https://lender.example/open-banking/callback",
                  "the credit service: reads a loan applicant's transactions with the applicant's consent",
                  CREDIT_SERVICE),
)

# Demo history the bank writes into the payments ledger once (through the gateway, idempotently):
# (idempotency key, from account, to account, amount CNY, description).
OPENBANKING_DEMO_TRANSFERS: tuple[tuple[str, str, str, str, str], ...] = (
    ("sbx-bank-seed-1", "acc_00000000000000000000000008", "acc_00000000000000000000000b04",
     "36.50", "Coffee and a bun"),
    ("sbx-bank-seed-2", "acc_00000000000000000000000008", "acc_00000000000000000000000b01",
     "1000.00", "Monthly saving"),
    ("sbx-bank-seed-3", "acc_00000000000000000000000b02", "acc_00000000000000000000000008",
     "88.88", "Red packet"),
)


# --- gateway: each demo participant's boundary conditions (read by sandbox/gateway only) -------
# The restricted authorisation a sandbox grants: amounts in CNY (the gateway's reporting
# currency), a testing window of `window_days` from the day the sandbox first starts, and an
# optional operation allow-list ("METHOD /path" per service; empty = every operation).


@dataclass(frozen=True)
class DemoLimits:
    max_single: str  # largest single transaction
    daily_volume: str  # total moved per UTC day
    max_customers: int  # distinct customers (paying accounts) over the testing window
    rate_limit_per_minute: int
    window_days: int = 180  # FCA cohorts test for about six months
    operations: tuple[str, ...] = ()


DEMO_PARTICIPANT_LIMITS: dict[str, DemoLimits] = {
    "ptp_00000000000000000000000001": DemoLimits("20000.00", "200000.00", 50, 600),
    "ptp_00000000000000000000000002": DemoLimits("10000.00", "100000.00", 20, 600),
    "ptp_00000000000000000000000003": DemoLimits("50000.00", "500000.00", 100, 600),
    "ptp_00000000000000000000000004": DemoLimits("50000.00", "500000.00", 100, 600),
    "ptp_00000000000000000000000005": DemoLimits("10000.00", "100000.00", 20, 600),
    # The services' own keys: a lender float moves more, and seeding bursts need headroom.
    "ptp_00000000000000000000000011": DemoLimits("1000000.00", "10000000.00", 10000, 6000),
    "ptp_00000000000000000000000012": DemoLimits("1000000.00", "10000000.00", 10000, 6000),
    "ptp_00000000000000000000000013": DemoLimits("100000.00", "5000000.00", 10000, 6000),
}
