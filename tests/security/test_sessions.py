"""Browser sessions end when they should: fixation, logout, logout everywhere, password change, disabling, open tabs, Secure.

Every login goes through the real login page in a real Chromium (the only way to a session);
what a session then opens is checked with plain HTTP clients carrying its cookies, as an
attacker holding a stolen or planted cookie would.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.security.browser_login import SESSION_COOKIE, cookie_client, cookies_of, log_in, logged_in
from tests.support.vireo import VireoProcess
from tests.test_federation_tls import self_signed

pytestmark = pytest.mark.slow

DORA = ("dora", "dora-password-1")


@pytest.fixture
def contexts(chromium_browser: Any, playwright_sync: None) -> Iterator[Callable[[], Any]]:
    """Fresh browser contexts (separate browsers, as far as cookies go); `new()` gives a page in a new one."""
    opened: list[Any] = []

    def new(**options: Any) -> Any:
        context = chromium_browser.new_context(viewport={"width": 1400, "height": 900}, **options)
        opened.append(context)
        return context.new_page()

    yield new
    for context in opened:
        context.close()


@pytest.fixture
def server(start_vireo: Callable[..., VireoProcess]) -> VireoProcess:
    vireo = start_vireo()
    with vireo.client() as admin:
        assert admin.post("/api/users", json={"username": DORA[0], "password": DORA[1]}).status_code == 201
    return vireo


def test_a_cookie_planted_before_login_never_becomes_the_logged_in_session(server: VireoProcess, contexts: Callable[[], Any]) -> None:
    # the attacker visits Vireo and keeps the cookies it hands out, then plants them (another port of the host may set them)
    with httpx.Client(base_url=server.url, follow_redirects=True) as attacker:
        assert attacker.get("/login").status_code == 200
        planted = {**dict(attacker.cookies), SESSION_COOKIE: "attacker-chosen-value"}
    victim = contexts()
    victim.context.add_cookies([{"name": k, "value": v, "domain": "127.0.0.1", "path": "/"} for k, v in planted.items()])
    log_in(victim, server, *DORA)

    assert not logged_in(server, planted)  # the attacker's copy opens nothing
    after = cookies_of(victim)
    assert logged_in(server, after)
    assert after.get(SESSION_COOKIE) != planted[SESSION_COOKIE]  # a new id, issued at login
    with cookie_client(server, planted) as attacker:
        assert attacker.get("/settings").status_code == 303


def test_logout_ends_a_stolen_cookie_for_good(server: VireoProcess, contexts: Callable[[], Any]) -> None:
    page = contexts()
    log_in(page, server, *DORA)
    stolen = cookies_of(page)
    assert logged_in(server, stolen)
    page.get_by_role("button", name="dora").click()
    page.get_by_text("Logout", exact=True).click()
    page.wait_for_url("**/login*")
    assert not logged_in(server, stolen)
    log_in(page, server, *DORA)  # a later login is a new session: the stolen copy stays dead
    assert not logged_in(server, stolen)
    assert cookies_of(page).get(SESSION_COOKIE) != stolen.get(SESSION_COOKIE)


def test_password_change_logout_everywhere_and_disabling_end_other_browsers(server: VireoProcess, contexts: Callable[[], Any]) -> None:
    first, second = contexts(), contexts()
    log_in(first, server, *DORA)
    log_in(second, server, *DORA)
    assert logged_in(server, cookies_of(first)) and logged_in(server, cookies_of(second))

    # a new password, set on the Settings page of the first browser: the second is logged out, the first stays
    first.goto(f"{server.url}/settings")
    first.get_by_label("Current password").fill(DORA[1])
    first.get_by_label("New password").fill("dora-password-2")
    first.get_by_role("button", name="Change password").click()
    first.get_by_text("Password changed; 1 other browser session ended").wait_for()
    assert logged_in(server, cookies_of(first))
    assert not logged_in(server, cookies_of(second))
    second.wait_for_url("**/login?next=%2Fsettings", timeout=15000)  # its open tab, too

    # log out everywhere, from the API with the password: both browsers are out
    log_in(second, server, "dora", "dora-password-2")
    ended = httpx.delete(f"{server.url}/api/me/sessions", auth=("dora", "dora-password-2"))
    assert ended.status_code == 200 and ended.json() == {"sessions_ended": 2}
    assert not logged_in(server, cookies_of(first)) and not logged_in(server, cookies_of(second))
    first.wait_for_url("**/login?next=%2Fsettings", timeout=15000)

    # an administrator disables the account: its browser is out at once, and logging in again fails
    log_in(first, server, "dora", "dora-password-2")
    with server.client() as admin:
        assert admin.put("/api/users/dora", json={"disabled": True}).status_code == 200
    assert not logged_in(server, cookies_of(first))


@pytest.mark.parametrize("ending", ["logout in another tab", "account disabled"])
def test_an_open_tab_stops_working(server: VireoProcess, contexts: Callable[[], Any], ending: str) -> None:
    tab = contexts()
    log_in(tab, server, *DORA)
    other_tab = tab.context.new_page()  # the same browser: the same session
    other_tab.goto(f"{server.url}/settings")
    tab.get_by_label("Token name").fill("made-after-the-end")  # typed while still logged in

    if ending == "logout in another tab":
        other_tab.get_by_role("button", name="dora").click()
        other_tab.get_by_text("Logout", exact=True).click()
        other_tab.wait_for_url("**/login*")
    else:
        with server.client() as admin:
            assert admin.put("/api/users/dora", json={"disabled": True}).status_code == 200
    try:
        tab.get_by_role("button", name="Create token").click(timeout=5000)  # a websocket event of a page loaded before the end
    except PlaywrightTimeout:
        pass  # the 3 s sweep sent the tab to the login page before the click: the same end, by the other path

    tab.wait_for_url("**/login?next=*", timeout=15000)
    assert tokens_of(server, "dora") == 0


def tokens_of(vireo: VireoProcess, username: str) -> int:
    """Straight from the database: the API would need dora's login, which is what ended."""
    with sqlite3.connect(vireo.data_dir / "vireo.db") as db:
        (count,) = db.execute("select count(*) from api_token join user on user.id = api_token.user_id where user.username = ?", (username,)).fetchone()
    return int(count)


def test_an_idle_open_tab_is_sent_to_the_login_page(server: VireoProcess, contexts: Callable[[], Any]) -> None:
    """Without a click: a page with live updates must not keep receiving them after the end."""
    tab = contexts()
    log_in(tab, server, *DORA, target="/workflows")
    started = time.monotonic()
    assert httpx.delete(f"{server.url}/api/me/sessions", auth=DORA).json() == {"sessions_ended": 1}
    tab.wait_for_url("**/login?next=%2Fworkflows", timeout=15000)
    assert time.monotonic() - started < 15


def set_cookie_of_login(page: Any, vireo: VireoProcess, forwarded_proto: str | None = None) -> str:
    """The Set-Cookie header of the login's completion, as the server sent it.

    `forwarded_proto`: that request arrives with `X-Forwarded-Proto`, as from a TLS-terminating proxy.
    """
    if forwarded_proto:
        page.route("**/login/complete*", lambda route: route.continue_(headers={**route.request.headers, "x-forwarded-proto": forwarded_proto}))
    with page.expect_response(lambda r: "/login/complete" in r.url) as completed:
        page.goto(f"{vireo.url}/login?next=%2Fsettings")
        page.get_by_label("User name").fill(DORA[0])
        page.get_by_label("Password").fill(DORA[1])
        page.get_by_role("button", name="Log in").click()
    header = completed.value.header_value("set-cookie") or ""
    if forwarded_proto:  # no route handler left running when the context closes: that can hang the close
        page.unroute_all(behavior="ignoreErrors")
    return next(line for line in header.split("\n") if line.startswith(SESSION_COOKIE + "=")).lower()


def with_dora(vireo: VireoProcess) -> VireoProcess:
    with vireo.client() as admin:
        assert admin.post("/api/users", json={"username": DORA[0], "password": DORA[1]}).status_code == 201
    return vireo


def test_the_cookie_is_secure_when_served_over_https(start_vireo: Callable[..., VireoProcess], contexts: Callable[..., Any], tmp_path: Path) -> None:
    cert, key, _ = self_signed(tmp_path)
    vireo = with_dora(start_vireo(VIREO_SSL_CERTFILE=str(cert), VIREO_SSL_KEYFILE=str(key)))
    header = set_cookie_of_login(contexts(ignore_https_errors=True), vireo)
    assert "secure" in header and "httponly" in header and "samesite=lax" in header


def test_the_cookie_is_secure_behind_a_trusted_tls_proxy(start_vireo: Callable[..., VireoProcess], contexts: Callable[..., Any]) -> None:
    vireo = with_dora(start_vireo(VIREO_TRUSTED_PROXIES="127.0.0.1"))
    plain = set_cookie_of_login(contexts(), vireo)
    assert "httponly" in plain and "samesite=lax" in plain and "secure" not in plain
    assert "secure" in set_cookie_of_login(contexts(), vireo, forwarded_proto="https")


def test_the_cookie_is_secure_when_the_public_url_is_https(start_vireo: Callable[..., VireoProcess], contexts: Callable[..., Any]) -> None:
    vireo = with_dora(start_vireo(VIREO_PUBLIC_URL="https://vireo.example.org"))
    assert "secure" in set_cookie_of_login(contexts(), vireo)


def test_a_forwarded_proto_from_an_untrusted_peer_is_ignored(server: VireoProcess, contexts: Callable[..., Any]) -> None:
    assert "secure" not in set_cookie_of_login(contexts(), server, forwarded_proto="https")
