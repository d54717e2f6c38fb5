"""Logging a real Chromium context into a Vireo, and handing its cookies to plain HTTP clients (security tests)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.vireo import ADMIN_PASSWORD, VireoProcess

SESSION_COOKIE = "vireo_session"


def log_in(page: Any, vireo: VireoProcess, username: str = "admin", password: str = ADMIN_PASSWORD, target: str = "/settings") -> None:
    """Through the login page, as a person would; waits until the target page is there."""
    page.goto(f"{vireo.url}/login?next={target.replace('/', '%2F')}")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{vireo.url}{target}", timeout=30000)


def cookies_of(page: Any) -> dict[str, str]:
    return {c["name"]: c["value"] for c in page.context.cookies()}


def cookie_client(vireo: VireoProcess, cookies: dict[str, str]) -> httpx.Client:
    """An HTTP client carrying these cookies and no credentials of its own."""
    client = httpx.Client(base_url=vireo.url, timeout=30, follow_redirects=False)
    for name, value in cookies.items():
        client.cookies.set(name, value, domain="127.0.0.1")
    return client


def logged_in(vireo: VireoProcess, cookies: dict[str, str]) -> bool:
    """Whether these cookies are a logged-in session (the API answers instead of 401)."""
    with cookie_client(vireo, cookies) as client:
        return client.get("/api/me").status_code == 200
