"""/docs (Swagger UI) and /redoc work offline on every port: their scripts, styles and icons come
from the installed fastapi-offline package, never a CDN, and no web fonts are fetched. Checked
twice: the pages' HTML and assets in-process, and a real headless Chromium rendering /docs of a
running service (Debian's `chromium`; skipped when absent, .ci/run installs it)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sandbox.contracts import load_factory
from sandbox.topology import ServiceSpec, api_services
from tests.support.servers import wait_ready

SERVICES = api_services()  # the console's own pages: tests/console
PAGES = ("/docs", "/redoc")
# page -> the document it renders: every service's own, but the gateway's /docs and /redoc show
# the participant's contract (sandbox/gateway/docs.py) and its own document moves under /sandbox.
GATEWAY_PAGES = {"/docs": "/sandbox.json", "/redoc": "/sandbox.json",
                 "/sandbox/docs": "/openapi.json", "/sandbox/redoc": "/openapi.json"}
CASES = [(spec, page, GATEWAY_PAGES[page] if spec.gateway_prefix is None else "/openapi.json")
         for spec in SERVICES for page in (GATEWAY_PAGES if spec.gateway_prefix is None else PAGES)]
# Attribute values and script strings that the browser would fetch (href, src, url: '...').
_REFERENCE = re.compile(r"""(?:href|src)\s*=\s*["']([^"']+)["']|\burl:\s*["']([^"']+)["']|spec-url\s*=\s*["']([^"']+)["']""")
_EXPECTED_TYPE = {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TestClient]:
    """Every built service (the gateway too) as its launcher builds it, on scratch data; no
    lifespan is entered, the pages need none."""
    scratch = tmp_path_factory.mktemp("docs-offline")
    built = {}
    with pytest.MonkeyPatch.context() as patch:
        for spec in SERVICES:
            patch.setenv(f"{spec.env_prefix}DATA_DIR", str(scratch / spec.name))
            built[spec.name] = TestClient(load_factory(spec)())
    return built


@pytest.mark.parametrize(("spec", "page", "document"), CASES, ids=[f"{s.name}{p}" for s, p, _ in CASES])
def test_docs_pages_reference_only_local_assets_that_answer(
    clients: dict[str, TestClient], spec: ServiceSpec, page: str, document: str
) -> None:
    client = clients[spec.name]
    response = client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert not re.search(r"https?://", html), f"{spec.name}{page} names a remote URL:\n{html}"
    assert "fonts.googleapis" not in html and "fonts.gstatic" not in html
    references = {next(g for g in m.groups() if g) for m in _REFERENCE.finditer(html)}
    assert document in references, references
    assets = references - {document}
    expected = {".js"} | ({".css"} if page.endswith("/docs") else set())
    assert expected <= {Path(a).suffix for a in assets}, f"{spec.name}{page}: no local script/style in {assets}"
    for asset in sorted(references):
        assert asset.startswith("/") and not asset.startswith("//"), asset
        answer = client.get(asset)
        assert answer.status_code == 200, f"{spec.name}{page}: {asset} answered {answer.status_code}"
        wanted = _EXPECTED_TYPE[Path(asset).suffix]
        assert wanted in answer.headers["content-type"], (asset, answer.headers["content-type"])
        if asset.endswith(".css"):  # no @import or url() pulling fonts or images from the web
            assert not re.search(r"@import|url\(\s*[\"']?(?:https?:)?//", answer.text), asset


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_swagger_ui_renders_operations_offline_in_headless_chromium(tmp_path: Path) -> None:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium on PATH: `apt-get install chromium` (.ci/run installs it when absent)")
    port = _free_port()
    env = {**os.environ, "PAYMENTS_DATA_DIR": str(tmp_path / "payments")}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "services.payments.main:create_app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, timeout=15)
        # A fresh profile each run, and every host name but the loopback service unresolvable:
        # a page that needed a CDN would stay blank, as in an offline classroom.
        try:
            dumped = subprocess.run(
                [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                 "--virtual-time-budget=5000", "--dump-dom", f"{base}/docs"],
                capture_output=True, text=True, timeout=60,
            )
        except subprocess.TimeoutExpired:
            pytest.fail("headless chromium did not finish rendering /docs within 60 s")
        dom = dumped.stdout
        assert dumped.returncode == 0, dumped.stderr[-2000:]
        assert "opblock" in dom and "create_transfer" in dom, (
            f"/docs did not render Swagger operations offline; DOM starts:\n{dom[:2000]}\n"
            f"chromium stderr:\n{dumped.stderr[-2000:]}"
        )
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
