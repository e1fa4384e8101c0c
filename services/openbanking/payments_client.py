"""Open banking reaches the ledger with the kit's payments client (services/common/payments_client.py).
This name remains only for code that still imports the client from here."""

from services.common.payments_client import (
    PaymentRefused,
    PaymentsClient,
    PaymentsUnavailable,
)

__all__ = ["PaymentRefused", "PaymentsClient", "PaymentsUnavailable"]
