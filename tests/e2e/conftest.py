"""Fixtures of the browser tests: Debian's Chromium, one `ramparts demo` per module, a fresh
page on it for each test, and screenshots."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from ramparts.db.engine import DatabaseUrls
from tests.e2e.harness import CHROMIUM, CHROMIUM_ARGS, Demo, run_demo


@pytest.fixture(scope="module")
def chromium() -> str:
    if shutil.which(CHROMIUM) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing; .ci/run installs it (apt-get install chromium)")
        pytest.skip(f"{CHROMIUM} not installed: apt-get install chromium")
    return CHROMIUM


@pytest.fixture(scope="module")
def demo_env() -> dict[str, str]:
    """Settings for the module's demo (a module overrides this fixture to change them)."""
    return {}


@pytest.fixture(scope="module")
def demo(
    tmp_path_factory: pytest.TempPathFactory,
    make_database: Callable[..., DatabaseUrls],
    demo_env: dict[str, str],
) -> Iterator[Demo]:
    """`ramparts demo` on a fresh database with fresh credentials, once per module."""
    with run_demo(tmp_path_factory.mktemp("demo"), make_database(migrate=False), **demo_env) as (
        running
    ):
        yield running


@pytest.fixture
def browser(chromium: str) -> Iterator[Browser]:
    """Chromium, for one test: Playwright's sync API runs an event loop while it is open,
    which a test's own `asyncio.run` (say, provisioning a user) must not meet."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, demo: Demo) -> Iterator[Page]:
    """A fresh page (no cookies) on the demo: `page.goto("/")` is the demo's landing page."""
    context = browser.new_context(base_url=demo.base)
    yield context.new_page()
    context.close()


@pytest.fixture
def shot(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Callable[[Page, str], Path]:
    """`shot(page, name)`: a full-page screenshot under the run's `screenshots` folder,
    named after the test and `name`; returns its path."""
    folder = tmp_path_factory.getbasetemp() / "screenshots"
    folder.mkdir(exist_ok=True)
    test = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)

    def take(page: Page, name: str) -> Path:
        path = folder / f"{test}-{name}.png"
        page.screenshot(path=path, full_page=True)
        return path

    return take
