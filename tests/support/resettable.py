"""An ASGI app whose target can be swapped: stateful fuzzing starts each example on a fresh
service (fresh database, demo data), so hypothesis can replay an example exactly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class ResettableApp:
    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory
        self.current = factory()

    def reset(self) -> None:
        previous, self.current = self.current, self.factory()
        db = getattr(getattr(previous, "state", None), "db", None)
        if db is not None:  # its engine's connections, and the memory they hold, go with it
            db.dispose()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        await self.current(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        return self.current.openapi()
