"""The gateway's documentation pages. `/docs` and `/redoc` show what participants call through it:
the participant's contract (openapi/sandbox.json), served at `/sandbox.json` and built the way
`make openapi` builds it, from the services' own documents (asked of the running upstreams) and
this gateway's screening rules. The gateway's own regulator API (`/openapi.json`) has its pages at
`/sandbox/docs` and `/sandbox/redoc`. Scripts and styles come from fastapi-offline, as on every port."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

from sandbox.gateway.proxy import Gateway
from sandbox.participant_contract import SERVER, TITLE, ServiceContract, participant_contract
from sandbox.topology import SERVICES

log = logging.getLogger("sandbox.gateway.docs")

CONTRACT_URL = "/sandbox.json"
OWN_DOCS_URL = "/sandbox/docs"
OWN_REDOC_URL = "/sandbox/redoc"
STATIC_URL = "/static-offline-docs"  # fastapi-offline's mount, made by build_service_app
# The key typed into Authorize survives a reload of the page (kept in the browser's localStorage).
# No "Schemas" list under the operations: each operation shows its own, and drawing all of the
# contract's hundreds of schemas doubled the time the page took to appear.
SWAGGER_UI_PARAMETERS = {"persistAuthorization": True, "displayRequestDuration": True, "filter": True,
                         "defaultModelsExpandDepth": -1}


class ParticipantContract:
    """openapi/sandbox.json as this gateway serves it: built once every service has answered
    with its document, then kept; a service that cannot be reached is left out until it can."""

    def __init__(self, gateway: Gateway, own_document: Any = None) -> None:
        self.gateway = gateway
        self.own_document = own_document  # the gateway's own OpenAPI document: its events and webhooks
        self._complete: dict[str, Any] | None = None

    async def document(self) -> dict[str, Any]:
        if self._complete is not None:
            return self._complete
        services, missing = [], []
        for spec in SERVICES:
            if spec.gateway_prefix is None or not spec.is_built():
                continue
            document = await self._service_document(spec.gateway_prefix.strip("/"))
            if document is None:
                missing.append(f"`{spec.gateway_prefix}/…`")
            else:
                services.append(ServiceContract(spec.name, spec.gateway_prefix, document))
        rules = self.gateway.rules
        contract = participant_contract(
            services, lambda service, method, path: rules.screened_operation(service, method, path) is not None,
            gateway=self.own_document() if self.own_document is not None else None)
        if missing:
            contract["info"]["description"] += (
                f"\n\n**Not listed now:** {', '.join(missing)}: the service did not answer the gateway; "
                "reload this page once it runs.")
        else:
            self._complete = contract
        return contract

    async def _service_document(self, label: str) -> dict[str, Any] | None:
        url = f"{self.gateway.upstreams[label]}/openapi.json"
        try:
            answer = await self.gateway.client.get(url)
            answer.raise_for_status()
            document = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("no OpenAPI document from %s: %s", url, exc)
            return None
        return document if isinstance(document, dict) else None


def served_at(contract: dict[str, Any], base_url: str) -> dict[str, Any]:
    """The contract with this gateway's own address (any port offset) where it names 127.0.0.1:8000,
    so Swagger UI's "Try it out" calls the gateway that served the page."""
    info = dict(contract["info"])
    info["description"] = info["description"].replace(SERVER, base_url) + (
        f"\n\nThe regulator API's pages: [{OWN_DOCS_URL}]({OWN_DOCS_URL}), [{OWN_REDOC_URL}]({OWN_REDOC_URL}).")
    return {**contract, "info": info, "servers": [{"url": base_url, "description": "this gateway"}]}


def install_docs(app: FastAPI, gateway: Gateway) -> None:
    """Point the gateway's /docs and /redoc at the participant's contract; the kit's pages for
    the gateway's own document move to /sandbox/docs and /sandbox/redoc."""
    kit_pages = {"/docs", "/redoc"}
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) not in kit_pages]
    contract = ParticipantContract(gateway, app.openapi)

    @app.get(CONTRACT_URL, include_in_schema=False)
    async def participant_contract_json(request: Request) -> Response:
        base_url = str(request.base_url).rstrip("/")
        body = json.dumps(served_at(await contract.document(), base_url), ensure_ascii=False)
        return Response(body, media_type="application/json")

    def pages(docs_url: str, redoc_url: str, openapi_url: str, title: str) -> None:
        @app.get(docs_url, include_in_schema=False)
        async def swagger_ui(request: Request) -> HTMLResponse:
            root = request.scope.get("root_path", "")
            return get_swagger_ui_html(
                openapi_url=root + openapi_url, title=f"{title} - Swagger UI",
                oauth2_redirect_url=app.swagger_ui_oauth2_redirect_url,
                swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
                swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
                swagger_ui_parameters=SWAGGER_UI_PARAMETERS)

        @app.get(redoc_url, include_in_schema=False)
        async def redoc(request: Request) -> HTMLResponse:
            root = request.scope.get("root_path", "")
            return get_redoc_html(
                openapi_url=root + openapi_url, title=f"{title} - ReDoc",
                redoc_js_url=f"{root}{STATIC_URL}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{STATIC_URL}/favicon.png", with_google_fonts=False)

    pages("/docs", "/redoc", CONTRACT_URL, TITLE)
    pages(OWN_DOCS_URL, OWN_REDOC_URL, app.openapi_url or "/openapi.json", app.title)
