"""Settings every service shares; each service subclasses with its own env prefix."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Read from `<PREFIX>_*` environment variables (e.g. PAYMENTS_DATABASE_URL)."""

    model_config = SettingsConfigDict(extra="ignore")

    # A SQLite file under data_dir unless a database URL is given (postgresql://...).
    database_url: str | None = None
    data_dir: Path = Path(".sandbox-data")
    # Participant calls to other services go through the gateway with this service's own key.
    gateway_url: str = "http://127.0.0.1:8000"
    participant_key: str | None = None
    # Requests larger than this are refused with 413 before any handler runs.
    max_body_bytes: int = 64 * 1024
    # Seed the demo customers and accounts on first start.
    seed_demo_data: bool = True
    # Let a teacher or a test move this service's clock over HTTP (/_sandbox/clock).
    allow_time_travel: bool = True
    # Let a teacher or the gateway put this service back to its seeded state (/_sandbox/reset).
    allow_reset: bool = True
    log_level: str = "INFO"
    # How often (real seconds) the service does what fell due without a clock move (0: only on
    # a move of its clock): a ripple payment settling, a consent expiring. services/common/duework.py
    due_work_interval_seconds: float = Field(default=1.0, ge=0)
    # How long an Idempotency-Key claim is held (wall clock) before a retry may take it over.
    idempotency_lease_seconds: float = Field(default=30.0, gt=0)

