"""Real headless Chromium for tests, via Playwright's *sync* API.

Uses the system Chromium (Debian package ``chromium``); ``playwright install``
is never needed (and cannot download here).

Fixtures (import them into a test module or conftest)::

    from tests.support.browser import browser_page, chromium_browser  # noqa: F401

* ``chromium_browser`` (session scope): a launched ``playwright.sync_api.Browser``.
* ``playwright_sync`` (function scope): makes the session's Playwright usable
  in the current test (see below).  ``browser_page`` does this itself; a test
  that uses ``chromium_browser`` directly must request ``playwright_sync`` (or
  ``browser_page``) too.

Fixtures that are imported by name must be imported together with the
fixtures they depend on; a conftest can instead register everything with
``pytest_plugins = ["tests.support.postgres", "tests.support.browser"]``.
* ``browser_page`` (function scope): a ``Page`` in a fresh ``BrowserContext``
  (viewport 1400x900), closed after the test.  If the test failed, a
  full-page screenshot is saved to ``tests/artifacts/<test id>.png``.

IMPORTANT -- asyncio:

* Playwright's sync API refuses to run inside a running asyncio event loop.
  Tests using these fixtures must be plain ``def`` tests, not ``async def``
  (the project runs pytest-asyncio in auto mode, which runs ``async def``
  tests inside a loop).  ``playwright_sync`` fails such tests with a clear
  message.
* Between its calls, Playwright's sync API leaves *its own* event loop
  registered as the thread's "running loop" for as long as Playwright is
  started.  With a session-scoped Playwright, every later ``async def`` test
  (pytest-asyncio: "Runner.run() cannot be called from a running event loop")
  and every ``asyncio.run()`` in the main thread would fail -- also in tests
  that never touch the browser (known issue, microsoft/playwright-pytest#167).
  These fixtures therefore unregister Playwright's loop whenever no browser
  test is running and register it again in ``playwright_sync``.  Inside a
  browser test, ``asyncio.run()`` is still impossible.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
import shutil
from pathlib import Path
from collections.abc import Iterator

import pytest

__all__ = [
    "ARTIFACTS_DIR",
    "CHROMIUM_ARGS",
    "browser_page",
    "chromium_browser",
    "chromium_executable",
    "playwright_sync",
]

ARTIFACTS_DIR = Path(__file__).resolve().parents[1] / "artifacts"

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]

VIEWPORT = {"width": 1400, "height": 900}


def chromium_executable() -> str:
    return shutil.which("chromium") or "/usr/bin/chromium"


class _PlaywrightLoop:
    """Registers/unregisters Playwright's private loop as the thread's running loop."""

    loop: asyncio.AbstractEventLoop | None = None

    def capture(self) -> None:
        # Right after a sync call, Playwright has marked its loop as running.
        self.loop = asyncio._get_running_loop()

    def activate(self) -> None:
        if self.loop is None or self.loop.is_closed():
            return
        current = asyncio._get_running_loop()
        if current is None:
            asyncio._set_running_loop(self.loop)
        elif current is not self.loop:
            raise RuntimeError(
                "Playwright's sync API cannot be used while another asyncio event loop "
                "is running; write browser tests as plain `def` tests."
            )

    def deactivate(self) -> None:
        if self.loop is not None and asyncio._get_running_loop() is self.loop:
            asyncio._set_running_loop(None)


_PW_LOOP = _PlaywrightLoop()


@pytest.fixture(scope="session")
def chromium_browser():
    """A headless system Chromium shared by the whole session."""
    from playwright.sync_api import sync_playwright

    executable = chromium_executable()
    if not Path(executable).exists():
        pytest.fail(
            f"Chromium not found at {executable}. Run the tests with the test command "
            "from the project's README, which installs it (Debian package 'chromium').",
            pytrace=False,
        )
    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
    except BaseException:
        pw.stop()
        raise
    _PW_LOOP.capture()
    _PW_LOOP.deactivate()  # let non-browser (async) tests use asyncio meanwhile
    try:
        yield browser
    finally:
        _PW_LOOP.activate()
        try:
            browser.close()
        finally:
            pw.stop()  # leaves no running loop behind
            _PW_LOOP.loop = None


@contextlib.contextmanager
def _playwright_active(request) -> Iterator[None]:
    if inspect.iscoroutinefunction(getattr(request, "function", None)):
        pytest.fail(
            "Playwright's sync API cannot run inside an asyncio loop: make this test "
            "a plain `def` test (not `async def`).",
            pytrace=False,
        )
    _PW_LOOP.activate()
    try:
        yield
    finally:
        _PW_LOOP.deactivate()


@pytest.fixture
def playwright_sync(chromium_browser, request) -> Iterator[None]:
    """Make the session's Playwright (sync API) usable for the current test.

    Only needed by tests that use ``chromium_browser`` directly; ``browser_page``
    does this itself.
    """
    with _playwright_active(request):
        yield


def _artifact_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:180] or "test"


@pytest.fixture
def browser_page(chromium_browser, request) -> Iterator:
    """A fresh context + page (1400x900); screenshot to tests/artifacts/ on failure."""
    with _playwright_active(request):
        context = chromium_browser.new_context(viewport=VIEWPORT)
        try:
            page = context.new_page()
            failed_before = request.session.testsfailed
            yield page
            # The call-phase report has already been logged when fixtures are
            # torn down, so a failed test has bumped session.testsfailed.
            if request.session.testsfailed > failed_before and not page.is_closed():
                _save_failure_screenshot(page, request.node.nodeid)
        finally:
            context.close()


def _save_failure_screenshot(page, nodeid: str) -> None:
    try:
        ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS_DIR / f"{_artifact_name(nodeid)}.png"
        page.screenshot(path=str(path), full_page=True, timeout=5000)
    except Exception as exc:  # never mask the real failure
        print(f"[browser_page] could not save failure screenshot: {exc}")
    else:
        print(f"[browser_page] failure screenshot: {path}")
