"""Sandbox Bank: an OBIE v3.1.11-style open-banking API over the payments ledger."""
