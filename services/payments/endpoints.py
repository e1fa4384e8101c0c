"""Thin HTTP handlers for payments; the rules live in service.py (and cross_border.py, qr_payments.py).

Each handler is `async`. A POST hands its database work to `Idempotency.apply` (`Database.run`)
as one unit of work: on SQLite it runs on the event loop, on PostgreSQL in the database's own
threads (see `Database.run` for why). A GET only reads, in a worker thread (`Database.read`):
on SQLite a snapshot without the writer's lock, so a long read never holds the loop.

A money movement, e.g. POST /transfers, reads top to bottom: `create_transfer` below →
`service.transfer` (the checks, the legs from ledger.py, the journal) → `service.record_movement`
→ `JournalsRepository.post` → `fastpath.post_journal` (the balance updates and inserts), all in
the one transaction that `idem.apply` commits with the saved response.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from sqlmodel import Session

from services.common.app import ClockDep
from services.common.caller import CallerDep
from services.common.db import DatabaseDep
from services.common.demo import demo_account
from services.common.fields import CurrencyCode, IdPath
from services.common.idempotency import IdempotencyKeyHeader, idempotency_for
from services.common.ids import id_pattern
from services.common.money import Money
from services.common.pagination import CursorQuery, LimitQuery, Page, page_of
from services.common.problems import problem_responses
from services.payments import cross_border, qr_payments, service
from services.payments.presenters import account_public
from services.payments.schemas import (
    ACCOUNT_PREFIX,
    FX_QUOTE_PREFIX,
    JOURNAL_PREFIXES,
    MANDATE_PREFIX,
    PARTICIPANT_PATTERN,
    QR_AMOUNT_PATTERN,
    AccountCreate,
    AccountPublic,
    BalancePublic,
    CrossBorderCreate,
    DepositCreate,
    FxQuoteCreate,
    FxQuotePublic,
    InvariantsReport,
    JournalPublic,
    MandateCreate,
    MandatePublic,
    MandateStatus,
    QrCodePublic,
    QrPaymentCreate,
    RefundCreate,
    TransferCreate,
    WithdrawalCreate,
)

AccountId = Annotated[str, IdPath(ACCOUNT_PREFIX, "An account id, `acc_…`.")]
JournalId = Annotated[
    str, IdPath(JOURNAL_PREFIXES, "A journal id: `dep_`, `wd_`, `tr_`, `pay_`, `re_`, `ob_` or `xb_`.")
]
QuoteId = Annotated[str, IdPath(FX_QUOTE_PREFIX, "A quote id, `fxq_…`.")]
MandateId = Annotated[str, IdPath(MANDATE_PREFIX, "A mandate id, `mdt_…`.")]

# The rule for the POSTs (the fast routes). With `PAYMENTS_FAST_ROUTES` on, the default, main.py
# serves this router through `served_directly` (services/common/fastroute.py): a route whose
# endpoint takes exactly one body model, the `Request` and header parameters with an explicit
# alias gets a direct handler that skips FastAPI's per-request parameter solving, about a third
# of a transfer's time on the event loop. So the POSTs take no `Depends` and no path or query
# parameter: a route with one silently keeps FastAPI's own handler (`_plan` refuses it) and loses
# the gain (tests/payments/test_fast_routes.py checks the movements keep the shape). What a
# dependency would give they build from the request: `idempotency_for(request, key)` is what
# `IdempotencyDep` gives (clock, caller, database, the key's record), from the `Idempotency-Key`
# header taken as their own parameter. And they return a `Response` (`idem.apply` makes it), since
# the direct handler does not run the response model. Everything else, the GETs included, is
# plain FastAPI: with the setting off, all of it is.
router = APIRouter()

# OpenAPI links: how one response feeds the next call. Schemathesis's stateful phase follows
# them: open an account, top it up, pay the demo merchant from it, refund the payment.
# `merge_body: false` sends the link's body as written (schemathesis otherwise mixes it field
# by field into a generated body, which rarely makes a valid top-up, payment or refund).
EXACT_BODY = {"x-schemathesis": {"merge_body": False}}
DEMO_MERCHANT = demo_account("Lanzhou Noodle House").id
DEMO_CNY_WALLET = demo_account("Li Wei").id
DEMO_USD_WALLET = demo_account("Alice Example").id
ACCOUNT_LINKS: dict[str, Any] = {
    "GetAccount": {"operationId": "get_account", "parameters": {"account_id": "$response.body#/id"}},
    "TopUp": {
        "operationId": "create_deposit",
        "description": "Top the new account up by 100 of its currency from the test card that pays.",
        "requestBody": {
            "account_id": "$response.body#/id",
            "amount": {"amount": "100", "currency": "$response.body#/currency"},
            "card_number": "4242424242424242",
        },
        **EXACT_BODY,
    },
    "MerchantQr": {
        "operationId": "get_merchant_qr",
        "description": "The QR code a new merchant account shows at its till.",
        "parameters": {"account_id": "$response.body#/id"},
    },
}
GET_JOURNAL: dict[str, Any] = {
    "GetJournal": {"operationId": "get_journal", "parameters": {"journal_id": "$response.body#/id"}}
}
DEPOSIT_LINKS: dict[str, Any] = {
    **GET_JOURNAL,
    "PayMerchant": {
        "operationId": "create_transfer",
        "description": "Spend from the wallet this top-up credited at the demo merchant "
        f"({DEMO_MERCHANT}, CNY).",
        "requestBody": {
            "from_account_id": "$response.body#/to_account_id",
            "to_account_id": DEMO_MERCHANT,
            "amount": {"amount": "10", "currency": "$response.body#/amount/currency"},
        },
        **EXACT_BODY,
    },
}
TRANSFER_LINKS: dict[str, Any] = {
    **GET_JOURNAL,
    "Refund": {
        "operationId": "create_refund",
        "description": "Refund what is left of this transfer or payment.",
        "requestBody": {"journal_id": "$response.body#/id"},
        **EXACT_BODY,
    },
}


QUOTE_LINKS: dict[str, Any] = {
    "GetQuote": {"operationId": "get_fx_quote", "parameters": {"quote_id": "$response.body#/id"}},
    "PayQuote": {
        "operationId": "create_cross_border_payment",
        "description": f"Pay a CNY → USD quote from the demo CNY wallet ({DEMO_CNY_WALLET}) to the "
        f"demo USD wallet ({DEMO_USD_WALLET}); quotes in other currencies are refused (409).",
        "requestBody": {
            "quote_id": "$response.body#/id",
            "from_account_id": DEMO_CNY_WALLET,
            "to_account_id": DEMO_USD_WALLET,
        },
        **EXACT_BODY,
    },
}
QR_LINKS: dict[str, Any] = {
    "PayDynamicQr": {
        "operationId": "create_qr_payment",
        "description": f"Scan a dynamic QR with the demo CNY wallet ({DEMO_CNY_WALLET}) and pay "
        "the amount it carries (a static QR carries none and is refused, 409).",
        "requestBody": {
            "payload": "$response.body#/payload",
            "from_account_id": DEMO_CNY_WALLET,
            "amount": "$response.body#/amount",
        },
        **EXACT_BODY,
    },
    "PayStaticQr": {
        "operationId": "create_qr_payment",
        "description": f"Scan a static QR with the demo CNY wallet ({DEMO_CNY_WALLET}) and pay 10 "
        "of the merchant's currency (a dynamic QR for another amount is refused, 409).",
        "requestBody": {
            "payload": "$response.body#/payload",
            "from_account_id": DEMO_CNY_WALLET,
            "amount": {"amount": "10", "currency": "$response.body#/currency"},
        },
        **EXACT_BODY,
    },
}


def _created(model: type, links: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    return {201: {"model": model, "description": "Created", "links": links}}


@router.post(
    "/accounts",
    status_code=201,
    tags=["accounts"],
    operation_id="create_account",
    response_model=AccountPublic,
    responses={**_created(AccountPublic, ACCOUNT_LINKS), **problem_responses(409, 422)},
)
async def create_account(body: AccountCreate, request: Request, key: IdempotencyKeyHeader = None):
    """Open a personal wallet or a merchant account in one currency."""
    idem = await idempotency_for(request, key)
    return await idem.apply(lambda session: service.open_account(session, body, idem.clock.now(), idem.caller))


@router.get(
    "/accounts",
    tags=["accounts"],
    operation_id="list_accounts",
    response_model=Page[AccountPublic],
    responses=problem_responses(422),
)
async def list_accounts(
    db: DatabaseDep,
    caller: CallerDep,
    limit: LimitQuery = 20,
    cursor: CursorQuery = None,
    kind: Annotated[Literal["personal", "merchant", "internal"] | None, Query()] = None,
    currency: Annotated[CurrencyCode | None, Query()] = None,
) -> Page[AccountPublic]:
    """List accounts, oldest first, a page at a time (through the gateway: the caller's own)."""
    accounts = await db.read(lambda session: service.list_accounts(session, limit, cursor, kind, currency, caller))
    return page_of(accounts, limit, lambda a: a.id)


@router.get(
    "/accounts/{account_id}",
    tags=["accounts"],
    operation_id="get_account",
    response_model=AccountPublic,
    responses=problem_responses(404, 422),
)
async def get_account(account_id: AccountId, db: DatabaseDep, caller: CallerDep) -> AccountPublic:
    """One account, with its balance."""
    return await db.read(lambda session: account_public(service.get_account(session, account_id, caller)))


@router.get(
    "/accounts/{account_id}/balance",
    tags=["accounts"],
    operation_id="get_balance",
    response_model=BalancePublic,
    responses=problem_responses(404, 422),
)
async def get_balance(account_id: AccountId, db: DatabaseDep, clock: ClockDep, caller: CallerDep) -> BalancePublic:
    """What the account holds now."""
    account = await db.read(lambda session: service.get_account(session, account_id, caller))
    return BalancePublic(
        account_id=account.id,
        available=Money.of(account.balance_minor, account.currency),
        as_of=clock.now(),
    )


@router.get(
    "/accounts/{account_id}/journals",
    tags=["accounts"],
    operation_id="list_account_journals",
    response_model=Page[JournalPublic],
    responses=problem_responses(404, 422),
)
async def list_account_journals(
    account_id: AccountId, db: DatabaseDep, caller: CallerDep, limit: LimitQuery = 20,
    cursor: CursorQuery = None,
) -> Page[JournalPublic]:
    """The account's statement: every journal that touched it, oldest first."""
    def statement(session: Session) -> list[JournalPublic]:
        service.get_account(session, account_id, caller)
        return service.list_journals(session, limit, cursor, account_id)

    return page_of(await db.read(statement), limit, lambda j: j.id)


@router.get(
    "/accounts/{account_id}/qr",
    tags=["qr"],
    operation_id="get_merchant_qr",
    response_model=QrCodePublic,
    responses={200: {"model": QrCodePublic, "description": "The merchant's QR", "links": QR_LINKS},
               **problem_responses(404, 409, 422)},
)
async def get_merchant_qr(
    account_id: AccountId,
    db: DatabaseDep,
    caller: CallerDep,
    amount: Annotated[
        str | None,
        Query(pattern=QR_AMOUNT_PATTERN, description="Makes a dynamic QR for this amount, in the "
              "merchant's currency (no more decimals than it has); omit for a static QR."),
    ] = None,
) -> QrCodePublic:
    """A merchant's EMVCo merchant-presented QR code (static, or dynamic with an amount)."""
    return await db.read(lambda session: qr_payments.merchant_qr(session, account_id, amount, caller))


@router.post(
    "/deposits",
    status_code=201,
    tags=["movements"],
    operation_id="create_deposit",
    response_model=JournalPublic,
    responses={**_created(JournalPublic, DEPOSIT_LINKS), **problem_responses(402, 404, 409, 422)},
)
async def create_deposit(body: DepositCreate, request: Request, key: IdempotencyKeyHeader = None):
    """Top up a wallet from a card (test cards force declines)."""
    idem = await idempotency_for(request, key)
    return await idem.apply(
        lambda session: service.deposit(session, body, idem.clock.now(), idem.record_id, idem.caller))


@router.post(
    "/withdrawals",
    status_code=201,
    tags=["movements"],
    operation_id="create_withdrawal",
    response_model=JournalPublic,
    responses={**_created(JournalPublic, GET_JOURNAL), **problem_responses(403, 404, 409, 422)},
)
async def create_withdrawal(body: WithdrawalCreate, request: Request, key: IdempotencyKeyHeader = None):
    """Pay money out of a wallet to the owner's bank."""
    idem = await idempotency_for(request, key)
    return await idem.apply(
        lambda session: service.withdraw(session, body, idem.clock.now(), idem.record_id, idem.caller))


@router.post(
    "/transfers",
    status_code=201,
    tags=["movements"],
    operation_id="create_transfer",
    response_model=JournalPublic,
    responses={**_created(JournalPublic, TRANSFER_LINKS), **problem_responses(403, 404, 409, 422)},
)
async def create_transfer(body: TransferCreate, request: Request, key: IdempotencyKeyHeader = None):
    """Send money to a person (P2P), pay a merchant from a wallet (0.6% fee to the merchant), or
    move money between businesses (no fee)."""
    idem = await idempotency_for(request, key)
    return await idem.apply(
        lambda session: service.transfer(session, body, idem.clock.now(), idem.record_id, idem.caller))


@router.post(
    "/refunds",
    status_code=201,
    tags=["movements"],
    operation_id="create_refund",
    response_model=JournalPublic,
    responses={**_created(JournalPublic, GET_JOURNAL), **problem_responses(404, 409, 422)},
)
async def create_refund(body: RefundCreate, request: Request, key: IdempotencyKeyHeader = None):
    """Refund all or part of a transfer or payment, never more than it in total."""
    idem = await idempotency_for(request, key)
    return await idem.apply(
        lambda session: service.refund(session, body, idem.clock.now(), idem.record_id, idem.caller))


@router.post(
    "/qr-payments",
    status_code=201,
    tags=["qr"],
    operation_id="create_qr_payment",
    response_model=JournalPublic,
    responses={**_created(JournalPublic, TRANSFER_LINKS), **problem_responses(403, 404, 409, 422)},
)
async def create_qr_payment(body: QrPaymentCreate, request: Request, key: IdempotencyKeyHeader = None):
    """Pay the merchant a scanned QR names: checks the CRC and tags, then pays as POST /transfers."""
    idem = await idempotency_for(request, key)
    return await idem.apply(
        lambda session: qr_payments.qr_payment(session, body, idem.clock.now(), idem.record_id, idem.caller))


@router.post(
    "/fx/quotes",
    status_code=201,
    tags=["cross-border"],
    operation_id="create_fx_quote",
    response_model=FxQuotePublic,
    responses={**_created(FxQuotePublic, QUOTE_LINKS), **problem_responses(409, 422)},
)
async def create_fx_quote(body: FxQuoteCreate, request: Request, key: IdempotencyKeyHeader = None):
    """Price a conversion on a rail (ripple or correspondent), payable once within 30 seconds."""
    idem = await idempotency_for(request, key)
    return await idem.apply(lambda session: cross_border.create_quote(session, body, idem.clock.now()))


@router.get(
    "/fx/quotes/{quote_id}",
    tags=["cross-border"],
    operation_id="get_fx_quote",
    response_model=FxQuotePublic,
    responses=problem_responses(404, 422),
)
async def get_fx_quote(quote_id: QuoteId, db: DatabaseDep, clock: ClockDep) -> FxQuotePublic:
    """A quote, and whether it is still open, expired or used."""
    return await db.read(lambda session: cross_border.get_quote(session, quote_id, clock.now()))


@router.post(
    "/cross-border-payments",
    status_code=201,
    tags=["cross-border"],
    operation_id="create_cross_border_payment",
    response_model=JournalPublic,
    responses={**_created(JournalPublic, GET_JOURNAL), **problem_responses(403, 404, 409, 422)},
)
async def create_cross_border_payment(body: CrossBorderCreate, request: Request, key: IdempotencyKeyHeader = None):
    """Pay a quote: the payer is debited in the currency sold, the payee credited in the one bought."""
    idem = await idempotency_for(request, key)
    return await idem.apply(
        lambda session: cross_border.cross_border_payment(session, body, idem.clock.now(), idem.record_id, idem.caller))


MANDATE_LINKS: dict[str, Any] = {
    "GetMandate": {"operationId": "get_mandate", "parameters": {"mandate_id": "$response.body#/id"}},
    "RevokeMandate": {"operationId": "revoke_mandate", "parameters": {"mandate_id": "$response.body#/id"}},
}


@router.post(
    "/mandates",
    status_code=201,
    tags=["mandates"],
    operation_id="create_mandate",
    response_model=MandatePublic,
    responses={**_created(MandatePublic, MANDATE_LINKS), **problem_responses(404, 409, 422)},
)
async def create_mandate(body: MandateCreate, request: Request, key: IdempotencyKeyHeader = None):
    """Let another participant debit one of your accounts, within caps, until it expires."""
    idem = await idempotency_for(request, key)
    return await idem.apply(lambda session: service.create_mandate(session, body, idem.clock.now(), idem.caller))


@router.get(
    "/mandates",
    tags=["mandates"],
    operation_id="list_mandates",
    response_model=Page[MandatePublic],
    responses=problem_responses(422),
)
async def list_mandates(
    db: DatabaseDep,
    clock: ClockDep,
    caller: CallerDep,
    limit: LimitQuery = 20,
    cursor: CursorQuery = None,
    debtor_account_id: Annotated[str | None, Query(pattern=id_pattern(ACCOUNT_PREFIX))] = None,
    grantee_participant_id: Annotated[str | None, Query(pattern=PARTICIPANT_PATTERN)] = None,
    status: Annotated[MandateStatus | None, Query()] = None,
) -> Page[MandatePublic]:
    """List mandates, oldest first: through the gateway, those the caller granted or holds."""
    now = clock.now()
    found = await db.read(lambda session: service.list_mandates(
        session, limit, cursor, now, debtor_account_id, grantee_participant_id, status, caller))
    return page_of(found, limit, lambda m: m.id)


@router.get(
    "/mandates/{mandate_id}",
    tags=["mandates"],
    operation_id="get_mandate",
    response_model=MandatePublic,
    responses=problem_responses(404, 422),
)
async def get_mandate(mandate_id: MandateId, db: DatabaseDep, clock: ClockDep, caller: CallerDep) -> MandatePublic:
    """One mandate, its status and what it debited this period (its grantor or grantee)."""
    now = clock.now()
    return await db.read(lambda session: service.get_mandate(session, mandate_id, now, caller))


@router.post(
    "/mandates/{mandate_id}/revoke",
    tags=["mandates"],
    operation_id="revoke_mandate",
    response_model=MandatePublic,
    responses={200: {"model": MandatePublic, "description": "Revoked (now or before)"},
               **problem_responses(403, 404, 409, 422)},
)
async def revoke_mandate(mandate_id: MandateId, request: Request, key: IdempotencyKeyHeader = None):
    """Revoke a mandate (its grantor): no debit relies on it after this; again is a no-op."""
    idem = await idempotency_for(request, key)
    return await idem.apply(
        lambda session: service.revoke_mandate(session, mandate_id, idem.clock.now(), idem.caller),
        status_code=200)


@router.get(
    "/journals",
    tags=["movements"],
    operation_id="list_journals",
    response_model=Page[JournalPublic],
    responses=problem_responses(422),
)
async def list_journals(db: DatabaseDep, caller: CallerDep, limit: LimitQuery = 20,
                        cursor: CursorQuery = None) -> Page[JournalPublic]:
    """Every journal in the ledger, oldest first (through the gateway: those touching the
    caller's own accounts)."""
    journals = await db.read(lambda session: service.list_journals(session, limit, cursor, None, caller))
    return page_of(journals, limit, lambda j: j.id)


@router.get(
    "/journals/{journal_id}",
    tags=["movements"],
    operation_id="get_journal",
    response_model=JournalPublic,
    responses=problem_responses(404, 422),
)
async def get_journal(journal_id: JournalId, db: DatabaseDep, caller: CallerDep) -> JournalPublic:
    """One journal and its postings."""
    return await db.read(lambda session: service.get_journal(session, journal_id, caller))


@router.get(
    "/invariants",
    tags=["ledger"],
    operation_id="check_invariants",
    response_model=InvariantsReport,
)
async def check_invariants(db: DatabaseDep) -> InvariantsReport:
    """Check the ledger: debits equal credits, no forbidden overdraft, keys applied once."""
    return await db.read(service.check_invariants)
