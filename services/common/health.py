"""Liveness and readiness, the same on every service and the gateway."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request
from pydantic import BaseModel

from services.common.problems import Problem, problem_responses


class Health(BaseModel):
    """`ok` when the check passed."""

    status: str
    service: str


def health_router(service: str, check_ready: Callable[[Request], None]) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", operation_id="healthz", response_model=Health)
    def healthz() -> Health:
        """The process is alive."""
        return Health(status="ok", service=service)

    @router.get(
        "/readyz", operation_id="readyz", response_model=Health, responses=problem_responses(503)
    )
    def readyz(request: Request) -> Health:
        """The service can reach its database (or, for the gateway, its own store)."""
        try:
            check_ready(request)
        except Exception as exc:  # any failure means not ready; say which
            raise Problem(503, "not-ready", "Service not ready", str(exc)) from exc
        return Health(status="ok", service=service)

    return router
