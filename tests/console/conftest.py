"""The console as a learner meets it: the whole sandbox launched as `make run` launches it (on
ports moved by an offset), and Debian's headless chromium driven by playwright (its own browser
download is never used). No chromium: skipped, except under CI=true, where it is a failure."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from sandbox.topology import CONSOLE
from tests.support.ports import free_port_offset
from tests.support.stack import Sandbox, sandbox_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
STEP_TIMEOUT_MS = 30_000
INSTALL_HINT = "no chromium on PATH: `apt-get install chromium` (.ci/run installs it when absent)"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The browser tests need chromium and a launched sandbox; the pure ones need neither."""
    for item in items:
        if "browser" not in item.fixturenames:
            continue
        if CHROMIUM is None:
            if os.environ.get("CI", "").lower() != "true":  # under CI the browser fixture fails instead
                item.add_marker(pytest.mark.skip(reason=INSTALL_HINT))
        elif not sys.platform.startswith("linux"):
            item.add_marker(pytest.mark.skip(reason="the launcher's clean-up relies on Linux"))


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    yield from sandbox_for(tmp_path_factory.mktemp("console"), free_port_offset())


@pytest.fixture(scope="session")
def console_url(sandbox: Sandbox) -> str:
    return f"http://127.0.0.1:{CONSOLE.port + sandbox.offset}"


def _is_local(url: str) -> bool:
    return urlsplit(url).hostname == "127.0.0.1"


class Browser:
    """A headless chromium that can reach 127.0.0.1 only, and remembers what it asked for."""

    def __init__(self, playwright: Any) -> None:
        self.requested: list[str] = []
        self.blocked: list[str] = []
        self.browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, timeout=STEP_TIMEOUT_MS,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                  "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"])
        # 1280x800: a classroom projector's resolution.
        self.context = self.browser.new_context(viewport={"width": 1280, "height": 800})
        self.context.set_default_timeout(STEP_TIMEOUT_MS)
        self.context.on("request", lambda request: self.requested.append(request.url))

        def refuse(route: Any) -> None:  # anything bound elsewhere never goes out
            self.blocked.append(route.request.url)
            route.abort()

        self.context.route(lambda url: not _is_local(url), refuse)

    def new_page(self) -> Any:
        return self.context.new_page()

    def close(self) -> None:
        self.browser.close()


# Module, not session: a sync playwright keeps its event loop running in the main thread while it
# is open, so every later test in this worker that runs asyncio (or another playwright) would fail.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if CHROMIUM is None:  # only under CI=true (skipped otherwise, above): a failure
        pytest.fail(INSTALL_HINT)
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]' (playwright)")
    with sync_api.sync_playwright() as playwright:
        opened = Browser(playwright)
        try:
            yield opened
        finally:
            opened.close()
    # Every page, script and stylesheet came from the console itself: nothing left the machine.
    assert opened.blocked == []
    assert all(_is_local(url) for url in opened.requested), sorted(set(opened.requested))


def screenshot(page: Any, name: str) -> None:
    """With SANDBOX_CONSOLE_SCREENSHOTS=<dir> (docs/console for the README), keep what the page shows."""
    folder = os.environ.get("SANDBOX_CONSOLE_SCREENSHOTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        page.screenshot(path=os.path.join(folder, f"{name}.png"))
