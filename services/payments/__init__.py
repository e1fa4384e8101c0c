"""Payments: wallets, merchants and a double-entry ledger (Alipay / WeChat Pay)."""
