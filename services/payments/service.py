"""The payments rules: open accounts, top up, pay out, transfer, pay merchants, refund.

Each function does its work in the caller's session and does not commit: the endpoint's unit
of work (with its idempotency record) commits once, so a movement is all or nothing.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from services.common.caller import Caller
from services.common.clock import wire_time
from services.common.demo import GATEWAY_LOOKUPS
from services.common.ids import new_id
from services.common.money import AmountIn, Money
from services.common.problems import Problem, not_found
from services.payments import cards, events, ledger, mandates
from services.payments.fastpath import AccountRef, NewJournal
from services.payments.models import Account, CrossBorderTransit, FxQuote, Journal, Mandate
from services.payments.presenters import account_public, journal_public, mandate_public, seen_by
from services.payments.repository import (
    AccountsRepository,
    FxQuotesRepository,
    InvariantsRepository,
    JournalsRepository,
    MandatesRepository,
    TransitsRepository,
)
from services.payments.schemas import (
    MANDATE_PREFIX,
    AccountCreate,
    AccountPublic,
    CurrencyTotals,
    DepositCreate,
    InvariantCheck,
    InvariantsReport,
    JournalPublic,
    MandateCreate,
    MandatePublic,
    RefundCreate,
    TransferCreate,
    WithdrawalCreate,
)

CARD_FUNDING = "card_funding"
BANK_PAYOUTS = "bank_payouts"
MERCHANT_FEES = "merchant_fees"
OPENING_BALANCES = "opening_balances"
# Where a cross-border payment's money waits between its payer and its payee (cross_border.py).
CROSS_BORDER_IN_TRANSIT = "cross_border_in_transit"
DIRECT = Caller(None)  # a caller on the service's own port: no participant, sees everything


def open_account(session: Session, body: AccountCreate, now: datetime, caller: Caller = DIRECT) -> AccountPublic:
    account = AccountsRepository(session).add(
        Account(
            id=new_id("acc"),
            kind=body.kind,
            owner_name=body.owner_name,
            currency=body.currency,
            participant_id=caller.participant_id,
            created_at=now,
        )
    )
    return account_public(account)


def list_accounts(
    session: Session, limit: int, after: str | None, kind: str | None, currency: str | None,
    caller: Caller = DIRECT,
) -> list[AccountPublic]:
    """Every account for a direct caller (or the gateway's look-ups); a participant's own for a participant."""
    owner = caller.participant_id if caller.restricted else None
    accounts = AccountsRepository(session).list(limit, after, kind, currency, owner)
    return [account_public(a) for a in accounts]


def get_account(session: Session, account_id: str, caller: Caller = DIRECT) -> Account:
    """The account, if this caller may use it. Another participant's account is "not found",
    as Stripe answers for another account's objects: its existence is not disclosed."""
    account = AccountsRepository(session).get(account_id)
    if account is None or not caller.may_use(account.participant_id):
        raise not_found("Account", account_id)
    return account


def _check_currency(account: Account | AccountRef, amount: AmountIn) -> None:
    if account.currency != amount.currency:
        raise Problem(
            409,
            "currency-mismatch",
            "Currency does not match the account",
            f"Account {account.id} holds {account.currency}; the amount is in {amount.currency}.",
            account_id=account.id,
            account_currency=account.currency,
        )


def record_movement(
    session: Session,
    journal: NewJournal,
    legs: list[ledger.Leg],
    accounts: dict[str, Account | AccountRef],
    quote: FxQuote | None = None,
    transit: CrossBorderTransit | None = None,
) -> JournalPublic:
    """Apply the legs to the balances and record the journal (one batch), then refuse the whole
    movement if any balance change would overdraw: the unit of work rolls it all back."""
    currencies = {account_id: account.currency for account_id, account in accounts.items()}
    balances, postings = JournalsRepository(session).post(journal, legs, currencies)
    for account_id, new_balance in balances.items():
        if new_balance is None:
            repo = AccountsRepository(session)
            if not repo.exists(account_id):
                repo.forget([account_id])
                raise not_found("Account", account_id)
            account = accounts[account_id]
            delta = sum(leg.amount_minor for leg in legs if leg.account_id == account_id)
            raise Problem(
                409,
                "insufficient-funds",
                "Insufficient funds",
                f"Account {account_id} cannot pay "
                f"{Money.of(-delta, account.currency).amount} {account.currency}.",
                account_id=account_id,
            )
    return journal_public(journal, postings, quote, transit)


def deposit(session: Session, body: DepositCreate, now: datetime, idem_id: str | None,
            caller: Caller = DIRECT) -> JournalPublic:
    wallet = get_account(session, body.account_id, caller)
    _check_currency(wallet, body.amount)
    decline = cards.authorise(body.card_number)
    if decline is not None:
        raise Problem(
            402,
            "card-declined",
            "The card was declined",
            decline.message,
            decline_code=decline.code,
        )
    funding = AccountsRepository(session).system_account(CARD_FUNDING, wallet.currency, now)
    journal = NewJournal(
        id=new_id("dep"),
        kind="deposit",
        currency=wallet.currency,
        amount_minor=body.amount.minor,
        from_account_id=funding.id,
        to_account_id=wallet.id,
        description=body.description,
        card_last4=body.card_number[-4:],
        idempotency_key_id=idem_id,
        created_at=now,
    )
    legs = ledger.move(funding.id, wallet.id, journal.amount_minor)
    accounts = {funding.id: funding, wallet.id: wallet}
    result = record_movement(session, journal, legs, accounts)
    # The wallet's participant topped it up: the card funding side is the sandbox's own.
    events.movement_events(session, "deposit", result, now, accounts, wallet.participant_id)
    return seen_by(result, caller, accounts)


def withdraw(session: Session, body: WithdrawalCreate, now: datetime, idem_id: str | None,
             caller: Caller = DIRECT) -> JournalPublic:
    wallet = AccountsRepository(session).get(body.account_id)
    mandate = debit_mandate(session, body.account_id, wallet, body.mandate_id, caller)
    assert wallet is not None  # debit_mandate found it, or a mandate names it
    if wallet.kind == "internal":
        # Nobody owns them, so the owner rule would let anyone pay them out: they move only
        # through the ledger's own rules.
        raise Problem(409, "internal-account", "Internal accounts cannot be used directly",
                      "Card funding, fee and payout accounts cannot be withdrawn from.")
    _check_currency(wallet, body.amount)
    check_within_mandate(session, mandate, body.amount.minor, now)
    payouts = AccountsRepository(session).system_account(BANK_PAYOUTS, wallet.currency, now)
    journal = NewJournal(
        id=new_id("wd"),
        kind="withdrawal",
        currency=wallet.currency,
        amount_minor=body.amount.minor,
        from_account_id=wallet.id,
        to_account_id=payouts.id,
        description=body.description,
        mandate_id=mandate.id if mandate else None,
        idempotency_key_id=idem_id,
        created_at=now,
    )
    legs = ledger.move(wallet.id, payouts.id, journal.amount_minor)
    accounts = {payouts.id: payouts, wallet.id: wallet}
    result = record_movement(session, journal, legs, accounts)
    events.movement_events(session, "withdrawal", result, now, accounts, wallet.participant_id)
    return seen_by(result, caller, accounts)


def payer_and_payee(session: Session, payer_id: str, payee_id: str, mandate_id: str | None,
                     caller: Caller, movement: str
                     ) -> tuple[dict[str, AccountRef], AccountRef, AccountRef, Mandate | None]:
    """Both accounts of a movement, in one query, and the mandate the debit relies on (see
    `debit_mandate`): anyone's account may be paid, but only the caller's own debited, or
    another's under its owner's mandate; another's payer without one is "not found"."""
    if payer_id == payee_id:
        raise Problem(409, "same-account", "Payer and payee are the same account",
                      f"{movement} needs two different accounts.")
    accounts = AccountsRepository(session).get_many([payer_id, payee_id])
    mandate = debit_mandate(session, payer_id, accounts.get(payer_id), mandate_id, caller)
    if payee_id not in accounts:
        raise not_found("Account", payee_id)
    return accounts, accounts[payer_id], accounts[payee_id], mandate


# --- authority to debit ----------------------------------------------------------------------
# The own-account debit, the common case, costs nothing more than before: the owner comes with
# the account's row (remembered by the process, see `_KnownAccounts`). Only a debit naming a
# mandate reads (and on PostgreSQL locks) the mandate and sums its period's journals.


def _parties(caller: Caller) -> set[str]:
    """The participants a restricted caller speaks for: itself, and whom a service acts for."""
    return {p for p in (caller.participant_id, caller.on_behalf_of) if p is not None}


def _debits_without_mandate(caller: Caller, owner: str | None) -> bool:
    """A direct caller, the account's own participant (or a service acting for it) and anyone
    for an account opened directly; never the gateway's look-ups, which only read."""
    if caller.participant_id is None:
        return True
    if caller.participant_id == GATEWAY_LOOKUPS:
        return False
    return owner is None or owner in _parties(caller)


def debit_mandate(session: Session, payer_id: str, payer: Account | AccountRef | None,
                   mandate_id: str | None, caller: Caller) -> Mandate | None:
    """Who may debit `payer_id`, checked before anything else about the account is disclosed.

    Without `mandate_id`: the caller must debit it as its owner (else 404, as for an account
    that does not exist). With one: the mandate must be granted to the caller's authority (the
    participant a service acts for, else the caller; else 404) and name this account (else
    409). It is locked for the rest of the transaction, so concurrent debits under it count
    each other's amounts (`check_within_mandate`)."""
    if mandate_id is None:
        if payer is None or not _debits_without_mandate(caller, payer.participant_id):
            raise not_found("Account", payer_id)
        return None
    mandate = MandatesRepository(session).get(mandate_id, for_update=True)
    if mandate is None or not _holds(caller, mandate):
        raise not_found("Mandate", mandate_id)
    if mandate.debtor_account_id != payer_id:
        raise Problem(409, "mandate-account-mismatch", "The mandate is for another account",
                      f"{mandate.id} lets you debit {mandate.debtor_account_id}, not {payer_id}.",
                      mandate_id=mandate.id, debtor_account_id=mandate.debtor_account_id)
    return mandate


def _holds(caller: Caller, mandate: Mandate) -> bool:
    """Whether the caller may debit under the mandate: its grantee, or a direct caller."""
    if caller.participant_id is None:
        return True
    return caller.participant_id != GATEWAY_LOOKUPS and mandate.grantee_participant_id == caller.authority


def check_within_mandate(session: Session, mandate: Mandate | None, amount_minor: int,
                          now: datetime) -> None:
    """Refuse a debit the mandate does not cover now: revoked or expired, or over a cap. The
    period's use is summed after the mandate's row was locked, in the same transaction."""
    if mandate is None:
        return
    status = mandates.status_of(mandate.revoked_at, mandate.expires_at, now)
    if status != "active":
        raise Problem(403, "mandate-inactive", "The mandate is not active",
                      f"{mandate.id} is {status}; its grantor may grant a new one.",
                      mandate_id=mandate.id, mandate_status=status)
    start, end = mandates.period_bounds(now, mandate.period)
    used = MandatesRepository(session).used_between([mandate.id], start, end).get(mandate.id, 0)
    exceeded = mandates.cap_exceeded(amount_minor, mandate.max_per_debit_minor,
                                     mandate.max_per_period_minor, used)
    if exceeded is not None:
        remaining = Money.of(exceeded.remaining_minor, mandate.currency)
        raise Problem(403, "mandate-limit", "The debit exceeds the mandate's cap",
                      f"{mandate.id} allows at most {remaining.amount} {mandate.currency} more now "
                      f"({exceeded.limit}).",
                      mandate_id=mandate.id, limit=exceeded.limit, remaining=remaining.model_dump())


def transfer(session: Session, body: TransferCreate, now: datetime, idem_id: str | None,
             caller: Caller = DIRECT, resource: str = "transfer") -> JournalPublic:
    """Anyone's account may be paid; only the caller's own debited, or another's under its
    owner's mandate. The steps: who pays whom (and on whose authority), what may move, the
    legs, then the journal applied and recorded (`record_movement`) with its events
    (`payments.<resource>.completed`, and `.received` for another participant's payee)."""
    accounts, payer, payee, mandate = payer_and_payee(
        session, body.from_account_id, body.to_account_id, body.mandate_id, caller, "A transfer")
    if payer.kind == "internal" or payee.kind == "internal":
        raise Problem(409, "internal-account", "Internal accounts cannot be used directly",
                      "Card funding, fee and payout accounts only move through deposits, "
                      "withdrawals and fees.")
    _check_currency(payer, body.amount)
    _check_currency(payee, body.amount)
    amount = body.amount.minor
    check_within_mandate(session, mandate, amount, now)
    # The legs. A shopper's wallet paying a merchant is a merchant payment: the merchant pays
    # the 0.6% acceptance fee. Between businesses (a lender's float to a small merchant's
    # account, its repayments back) it is a plain transfer, as between firms at a bank.
    if payee.kind == "merchant" and payer.kind == "personal":
        fee = ledger.merchant_fee(amount)
        fees = AccountsRepository(session).system_account(MERCHANT_FEES, payee.currency, now)
        accounts[fees.id] = fees
        legs = ledger.merchant_payment(payer.id, payee.id, fees.id, amount, fee)
        kind, prefix = "payment", "pay"
    else:
        fee = 0
        legs = ledger.move(payer.id, payee.id, amount)
        kind, prefix = "transfer", "tr"
    journal = NewJournal(
        id=new_id(prefix),
        kind=kind,
        currency=payer.currency,
        amount_minor=amount,
        fee_minor=fee,
        from_account_id=payer.id,
        to_account_id=payee.id,
        description=body.description,
        mandate_id=mandate.id if mandate else None,
        idempotency_key_id=idem_id,
        created_at=now,
    )
    result = record_movement(session, journal, legs, accounts)
    events.movement_events(session, resource, result, now, accounts, payer.participant_id, payee.participant_id)
    return seen_by(result, caller, accounts)


def refund(session: Session, body: RefundCreate, now: datetime, idem_id: str | None,
           caller: Caller = DIRECT) -> JournalPublic:
    """The payee gives money back: only its participant may refund (a refund is the payee's
    decision, so no mandate stands in for it)."""
    journals = JournalsRepository(session)
    original = journals.get(body.journal_id)
    if original is None or not _may_refund(session, original, caller):
        raise not_found("Journal", body.journal_id)
    if original.kind not in ("transfer", "payment"):
        raise Problem(409, "not-refundable", "Only transfers and payments can be refunded",
                      f"{original.id} is a {original.kind}.")
    remaining = original.amount_minor - original.refunded_minor
    if body.amount is not None and body.amount.currency != original.currency:
        raise Problem(409, "currency-mismatch", "Currency does not match the original payment",
                      f"{original.id} was paid in {original.currency}.")
    refund_minor = body.amount.minor if body.amount is not None else remaining
    if refund_minor <= 0 or refund_minor > remaining:
        raise Problem(
            409,
            "refund-exceeds-payment",
            "Refund exceeds what is left to refund",
            f"{Money.of(remaining, original.currency).amount} {original.currency} of "
            f"{original.id} can still be refunded.",
            refundable=Money.of(remaining, original.currency).model_dump(),
        )
    fee_share = ledger.refund_fee_share(
        original.amount_minor, original.fee_minor, original.refunded_minor,
        original.fee_refunded_minor, refund_minor,
    )
    if not journals.add_refunded(original.id, refund_minor, fee_share):
        raise Problem(409, "refund-exceeds-payment", "Refund exceeds what is left to refund",
                      "Another refund of this payment was applied first; fetch it and retry.")
    payer, payee = original.from_account_id, original.to_account_id
    assert payer is not None and payee is not None
    accounts_repo = AccountsRepository(session)
    fees = (
        accounts_repo.system_account(MERCHANT_FEES, original.currency, now)
        if original.kind == "payment"
        else None
    )
    legs = ledger.refund(payer, payee, fees.id if fees else None, refund_minor, fee_share)
    accounts = accounts_repo.get_many([leg.account_id for leg in legs])
    journal = NewJournal(
        id=new_id("re"),
        kind="refund",
        currency=original.currency,
        amount_minor=refund_minor,
        fee_minor=fee_share,
        from_account_id=payee,
        to_account_id=payer,
        description=body.reason,
        refund_of=original.id,
        idempotency_key_id=idem_id,
        created_at=now,
    )
    result = record_movement(session, journal, legs, accounts)
    # The refund's payer is the original payee (the merchant); the original payer receives it.
    events.movement_events(session, "refund", result, now, accounts, accounts[payee].participant_id,
                           accounts[payer].participant_id)
    return seen_by(result, caller, accounts)


def open_with_balance(session: Session, account: Account, opening_minor: int, now: datetime) -> None:
    """Seed an account with an opening balance, posted like any other journal."""
    AccountsRepository(session).add(account)
    if opening_minor <= 0:
        return
    source = AccountsRepository(session).system_account(OPENING_BALANCES, account.currency, now)
    journal = NewJournal(
        id=new_id("ob"),
        kind="opening",
        currency=account.currency,
        amount_minor=opening_minor,
        from_account_id=source.id,
        to_account_id=account.id,
        description="Opening balance",
        created_at=now,
    )
    record_movement(session, journal, ledger.move(source.id, account.id, opening_minor),
          {source.id: source, account.id: account})


def _may_refund(session: Session, original: Journal, caller: Caller) -> bool:
    if caller.participant_id is None:
        return True
    payee = AccountsRepository(session).get(original.to_account_id or "")
    return payee is not None and _debits_without_mandate(caller, payee.participant_id)


def get_journal(session: Session, journal_id: str, caller: Caller = DIRECT) -> JournalPublic:
    """A journal, if it touched an account this caller may use."""
    repo = JournalsRepository(session)
    journal = repo.get(journal_id)
    if journal is None:
        raise not_found("Journal", journal_id)
    postings = repo.postings_of([journal.id])[journal.id]
    accounts: dict[str, AccountRef] = {}
    if caller.restricted:
        accounts = AccountsRepository(session).get_many([p.account_id for p in postings])
        if not any(a.kind != "internal" and caller.may_use(a.participant_id) for a in accounts.values()):
            raise not_found("Journal", journal_id)
    cross_border = [journal.id] if journal.kind == "cross_border" else []
    quotes = FxQuotesRepository(session).of_journals(cross_border)
    transits = TransitsRepository(session).of_journals(cross_border)
    return seen_by(journal_public(journal, postings, quotes.get(journal.id), transits.get(journal.id)),
                   caller, accounts)


def list_journals(session: Session, limit: int, after: str | None, account_id: str | None,
                  caller: Caller = DIRECT) -> list[JournalPublic]:
    repo = JournalsRepository(session)
    journals = repo.list(limit, after, account_id, caller.participant_id if caller.restricted else None)
    postings = repo.postings_of([j.id for j in journals])
    cross_border = [j.id for j in journals if j.kind == "cross_border"]
    quotes = FxQuotesRepository(session).of_journals(cross_border)
    transits = TransitsRepository(session).of_journals(cross_border)
    accounts: dict[str, AccountRef] = {}
    if caller.restricted:
        accounts = AccountsRepository(session).get_many(
            list({p.account_id for lines in postings.values() for p in lines}))
    return [seen_by(journal_public(j, postings[j.id], quotes.get(j.id), transits.get(j.id)), caller, accounts)
            for j in journals]


def check_invariants(session: Session) -> InvariantsReport:
    repo = InvariantsRepository(session)
    totals = repo.currency_totals()
    checks = [
        InvariantCheck(
            name="journals_balance",
            description="Every journal's postings sum to zero, in each currency it touches.",
            violations=[f"{j}: {c} off by {s}" for j, c, s in repo.unbalanced_journals()],
            ok=True,
        ),
        InvariantCheck(
            name="postings_in_account_currency",
            description="Every posting is in the currency of the account it moves.",
            violations=[f"{j}: {c} posting on {a}" for j, a, c in repo.postings_in_foreign_currency()],
            ok=True,
        ),
        InvariantCheck(
            name="debits_equal_credits",
            description="Per currency, total debits equal total credits.",
            violations=[f"{c}: debits {d} != credits {k}" for c, d, k in totals if d != k],
            ok=True,
        ),
        InvariantCheck(
            name="balances_match_postings",
            description="Every account's balance equals the sum of its postings.",
            violations=[f"{a}: balance {b} != postings {t}" for a, b, t in repo.balance_mismatches()],
            ok=True,
        ),
        InvariantCheck(
            name="no_forbidden_overdraft",
            description="No account that forbids overdraft has a negative balance.",
            violations=[f"{a}: {b}" for a, b in repo.forbidden_negatives()],
            ok=True,
        ),
        InvariantCheck(
            name="refunds_within_original",
            description="Refunds of a journal never exceed it, and match its refunded total.",
            violations=[f"{j}: amount {a}, refunds {t}" for j, a, t in repo.over_refunded()],
            ok=True,
        ),
        InvariantCheck(
            name="idempotency_keys_applied_at_most_once",
            description="Each idempotency key produced at most one journal, and only a key whose "
            "response was saved in the same transaction.",
            violations=[f"{k}: {n} journals" for k, n in repo.keys_applied_twice()]
            + [f"{j}: key record missing or unfinished" for j in repo.keys_without_record()],
            ok=True,
        ),
        InvariantCheck(
            name="mandated_debits_within_mandate",
            description="Every journal debited under a mandate debited the mandate's account, in "
            "its currency, while it was live (not yet expired or revoked), within its cap per "
            "debit, and its period's debits stayed within the cap per period.",
            violations=_mandate_violations(repo.mandated_debits()),
            ok=True,
        ),
        InvariantCheck(
            name="in_transit_holds_pending_payments",
            description="Per currency, the in-transit account holds exactly what the pending "
            "cross-border payments sent (they left their payers and have not reached their payees).",
            violations=_transit_violations(repo.system_balances(CROSS_BORDER_IN_TRANSIT),
                                           TransitsRepository(session).pending_totals()),
            ok=True,
        ),
    ]
    for check in checks:
        check.ok = not check.violations
    journals, postings = repo.counts()
    return InvariantsReport(
        ok=all(c.ok for c in checks),
        checks=checks,
        currencies=[
            CurrencyTotals(currency=c, debits=Money.of(d, c), credits=Money.of(k, c))
            for c, d, k in totals
        ],
        journals=journals,
        postings=postings,
    )


def _transit_violations(balances: dict[str, int], pending: dict[str, int]) -> list[str]:
    return [f"{currency}: in transit {balances.get(currency, 0)} != pending {pending.get(currency, 0)}"
            for currency in sorted(balances.keys() | pending.keys())
            if balances.get(currency, 0) != pending.get(currency, 0)]


def _mandate_violations(debits: list[tuple[Journal, Mandate]]) -> list[str]:
    violations = []
    period_totals: dict[tuple[str, datetime], int] = {}
    for journal, mandate in debits:
        if journal.from_account_id != mandate.debtor_account_id or journal.currency != mandate.currency:
            violations.append(f"{journal.id}: debited {journal.from_account_id} in {journal.currency}, "
                              f"{mandate.id} covers {mandate.debtor_account_id} in {mandate.currency}")
        if not mandates.live_at(mandate.revoked_at, mandate.expires_at, mandate.created_at, journal.created_at):
            violations.append(f"{journal.id}: {mandate.id} was not live at {wire_time(journal.created_at)}")
        if journal.amount_minor > mandate.max_per_debit_minor:
            violations.append(f"{journal.id}: {journal.amount_minor} over {mandate.id}'s "
                              f"max_per_debit {mandate.max_per_debit_minor}")
        start, _ = mandates.period_bounds(journal.created_at, mandate.period)
        total = period_totals[mandate.id, start] = period_totals.get((mandate.id, start), 0) + journal.amount_minor
        if total > mandate.max_per_period_minor:
            violations.append(f"{journal.id}: {mandate.id}'s {mandate.period} from {start.date()} "
                              f"reaches {total}, over max_per_period {mandate.max_per_period_minor}")
    return violations


# --- debit mandates --------------------------------------------------------------------------


def _mandates_public(session: Session, found: list[Mandate], now: datetime) -> list[MandatePublic]:
    """Each mandate with what it debited in its current period (one query per period kind)."""
    repo = MandatesRepository(session)
    used: dict[str, int] = {}
    for period in {m.period for m in found}:
        start, end = mandates.period_bounds(now, period)
        used.update(repo.used_between([m.id for m in found if m.period == period], start, end))
    return [mandate_public(m, used.get(m.id, 0), now) for m in found]


def add_mandate(session: Session, mandate: Mandate) -> Mandate:
    """Record a mandate as given (the demo seed's, whose ids are fixed)."""
    return MandatesRepository(session).add(mandate)


def create_mandate(session: Session, body: MandateCreate, now: datetime, caller: Caller = DIRECT) -> MandatePublic:
    """The debtor account's owner (or a direct caller) lets the grantee debit it."""
    account = AccountsRepository(session).get(body.debtor_account_id)
    if account is None or not (caller.participant_id is None or account.participant_id in _parties(caller)):
        raise not_found("Account", body.debtor_account_id)
    _check_currency(account, body.max_per_debit)
    _check_currency(account, body.max_per_period)
    if body.expires_at <= now:
        raise Problem(409, "mandate-expiry-passed", "The mandate would already have expired",
                      f"expires_at must be later than now ({wire_time(now)}).", now=wire_time(now))
    mandate = add_mandate(session, Mandate(
        id=new_id(MANDATE_PREFIX),
        debtor_account_id=account.id,
        grantor_participant_id=account.participant_id,
        grantee_participant_id=body.grantee_participant_id,
        currency=account.currency,
        max_per_debit_minor=body.max_per_debit.minor,
        max_per_period_minor=body.max_per_period.minor,
        period=body.period,
        purpose=body.purpose,
        expires_at=body.expires_at,
        created_at=now,
    ))
    return mandate_public(mandate, 0, now)


def _visible_mandate(session: Session, mandate_id: str, caller: Caller) -> Mandate:
    """The mandate if the caller is its grantor or grantee (or reads everything); else 404."""
    mandate = MandatesRepository(session).get(mandate_id)
    if mandate is None or (caller.restricted and not (
            {mandate.grantor_participant_id, mandate.grantee_participant_id} & _parties(caller))):
        raise not_found("Mandate", mandate_id)
    return mandate


def get_mandate(session: Session, mandate_id: str, now: datetime, caller: Caller = DIRECT) -> MandatePublic:
    return _mandates_public(session, [_visible_mandate(session, mandate_id, caller)], now)[0]


def list_mandates(session: Session, limit: int, after: str | None, now: datetime,
                  debtor_account_id: str | None, grantee_participant_id: str | None,
                  status: str | None, caller: Caller = DIRECT) -> list[MandatePublic]:
    """The caller's mandates, as grantor or grantee (all of them for a direct caller)."""
    found = MandatesRepository(session).list(
        limit, after, _parties(caller) if caller.restricted else None, now,
        debtor_account_id, grantee_participant_id, status)
    return _mandates_public(session, found, now)


def revoke_mandate(session: Session, mandate_id: str, now: datetime, caller: Caller = DIRECT) -> MandatePublic:
    """The grantor (or a direct caller) ends the mandate; revoking it again changes nothing."""
    mandate = _visible_mandate(session, mandate_id, caller)
    if caller.participant_id is not None and mandate.grantor_participant_id not in _parties(caller):
        raise Problem(403, "not-mandate-grantor", "Only the grantor may revoke a mandate",
                      f"{mandate.id} was granted by {mandate.grantor_participant_id or 'a direct caller'}.",
                      mandate_id=mandate.id)
    repo = MandatesRepository(session)
    repo.revoke(mandate.id, now)
    session.refresh(mandate)
    return _mandates_public(session, [mandate], now)[0]
