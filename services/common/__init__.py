"""The shared service kit: settings, database, problems, money, ids, clock, health, idempotency."""
