"""The address a caller reached us at, when a proxy (the gateway) forwarded the request.

Links a service puts in its answers (OBIE `Links`, a bank's consent URL) must point where the
caller can follow them: behind the gateway that is the gateway's host, not the service's own.
The forwarded headers come from the request, so they are checked before they shape a URL.
"""

from __future__ import annotations

import re

from starlette.requests import Request

_FORWARDED_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$")


def forwarded_origin(request: Request) -> str | None:
    """`scheme://host[:port]` from X-Forwarded-Host/-Proto, or None when absent or malformed."""
    host = request.headers.get("x-forwarded-host")
    if not host or not _FORWARDED_HOST.match(host):
        return None
    proto = request.headers.get("x-forwarded-proto")
    return f"{proto if proto in ('http', 'https') else 'http'}://{host}"
