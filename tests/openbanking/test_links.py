"""`Links` are valid URLs even for a request path a fuzzer makes up (brackets, spaces, controls)."""

from __future__ import annotations

from types import SimpleNamespace
from urllib.parse import urlsplit

from starlette.requests import Request

from services.openbanking.presenters import self_link


def _request(path: str) -> Request:
    app = SimpleNamespace(state=SimpleNamespace(settings=SimpleNamespace(public_url=None)))
    return Request({"type": "http", "method": "GET", "path": path, "root_path": "", "query_string": b"",
                    "scheme": "http", "server": ("127.0.0.1", 8004), "app": app,
                    "headers": [(b"host", b"127.0.0.1:8004")]})


def test_the_self_link_of_an_odd_path_is_a_valid_url() -> None:
    link = self_link(_request("/v3.1/aisp/accounts/[x y\x01"))["Self"]
    assert link == "http://127.0.0.1:8004/v3.1/aisp/accounts/%5Bx%20y%01"
    assert urlsplit(link).netloc == "127.0.0.1:8004"


def test_an_ordinary_path_is_unchanged() -> None:
    assert self_link(_request("/v3.1/aisp/accounts"))["Self"] == "http://127.0.0.1:8004/v3.1/aisp/accounts"
