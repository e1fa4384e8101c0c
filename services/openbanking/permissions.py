"""OBIE's permission rules as plain functions: what a consent releases, and to whom."""

from __future__ import annotations

from datetime import datetime

AIS_BASIC = "ReadAccountsBasic"
AIS_DETAIL = "ReadAccountsDetail"
BALANCES = "ReadBalances"
TX_BASIC = "ReadTransactionsBasic"
TX_DETAIL = "ReadTransactionsDetail"
TX_CREDITS = "ReadTransactionsCredits"
TX_DEBITS = "ReadTransactionsDebits"


def permission_errors(permissions: list[str]) -> list[str]:
    """Why a permission set breaks OBIE's rules (empty when it is valid)."""
    perms = set(permissions)
    errors = []
    if not perms & {AIS_BASIC, AIS_DETAIL}:
        errors.append("Permissions must include ReadAccountsBasic or ReadAccountsDetail.")
    if bool(perms & {TX_BASIC, TX_DETAIL}) != bool(perms & {TX_CREDITS, TX_DEBITS}):
        errors.append("ReadTransactionsBasic/Detail need ReadTransactionsCredits and/or Debits, "
                      "and the other way round.")
    return errors


def consent_allows(permissions: list[str], cluster: str) -> bool:
    """Whether the consent releases a data cluster: accounts, balances or transactions."""
    perms = set(permissions)
    if cluster == "accounts":
        return bool(perms & {AIS_BASIC, AIS_DETAIL})
    if cluster == "balances":
        return BALANCES in perms
    if cluster == "transactions":
        return bool(perms & {TX_BASIC, TX_DETAIL}) and bool(perms & {TX_CREDITS, TX_DEBITS})
    raise ValueError(cluster)


def releases_account_detail(permissions: list[str]) -> bool:
    return AIS_DETAIL in permissions


def releases_transaction_detail(permissions: list[str]) -> bool:
    return TX_DETAIL in permissions


def releases_direction(permissions: list[str], credit: bool) -> bool:
    """Credits need ReadTransactionsCredits; debits need ReadTransactionsDebits."""
    return (TX_CREDITS if credit else TX_DEBITS) in permissions


def booking_window(
    consent_from: datetime | None,
    consent_to: datetime | None,
    asked_from: datetime | None,
    asked_to: datetime | None,
) -> tuple[datetime | None, datetime | None]:
    """The TPP's filter narrowed to the consent's window: never wider than the PSU agreed."""
    lower = max((d for d in (consent_from, asked_from) if d is not None), default=None)
    upper = min((d for d in (consent_to, asked_to) if d is not None), default=None)
    return lower, upper


def in_window(booked: datetime, lower: datetime | None, upper: datetime | None) -> bool:
    return (lower is None or booked >= lower) and (upper is None or booked <= upper)


def is_expired(expires_at: datetime | None, now: datetime) -> bool:
    return expires_at is not None and now >= expires_at
