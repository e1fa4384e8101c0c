"""Docs that run: every shell example of README.md and docs/*.md is executed, page by page,
against a sandbox reset to its seeded state before each page, and what the page says it prints
is compared with what it printed (tests/support/docs_runner.py says how pages are read)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.docs_runner import (
    ROOT,
    documented_pages,
    run_page,
    skipped_curl_blocks,
    steps_of,
)
from tests.support.ports import free_port_offset
from tests.support.stack import Sandbox

PAGES = documented_pages()

TOOLS = ("curl", "jq", "sqlite3")
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None]
if MISSING and os.environ.get("CI") == "true":  # .ci/run installs them: a missing one is CI's fault
    raise RuntimeError(f"the docs' examples need {', '.join(MISSING)}; .ci/run installs them with apt-get")

pytestmark = [
    pytest.mark.skipif(bool(MISSING), reason=f"the pages' examples use {', '.join(TOOLS)} "
                       f"(missing: {', '.join(MISSING)}; apt-get install {' '.join(MISSING)})"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the launcher's clean-up relies on Linux"),
]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    running = Sandbox(tmp_path_factory.mktemp("docs-run"), free_port_offset())
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_curl_example_is_run(page: Path) -> None:
    assert skipped_curl_blocks(page) == [], (
        f"{page.name}: blocks at these lines call curl but are not run; make them ```bash or ```console")


@pytest.mark.parametrize("page", [p for p in PAGES if steps_of(p)], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_page_runs_and_prints_what_it_says(sandbox: Sandbox, page: Path) -> None:
    sandbox.reset()
    run = run_page(page, sandbox.workdir, sandbox.offset)
    problems = run.problems()
    assert not problems, "\n\n".join(problems)
