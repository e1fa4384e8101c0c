"""The fintech sandbox's services: one package each, plus `common`, the kit they share."""
