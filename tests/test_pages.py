"""Pages through NiceGUI's simulated `user`, and a walk over every registered route without credentials."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from nicegui import app as nicegui_app
from nicegui.testing import User
from starlette.routing import Mount, Route, WebSocketRoute

from tests.support.vireo import ADMIN_PASSWORD, free_port

PUBLIC = {"/login", "/api/health", "/favicon.ico"}  # and NiceGUI's static assets, below


@pytest.fixture(autouse=True)
def vireo_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[None]:
    """main.py reads its settings from the environment when NiceGUI's user fixture runs it."""
    marker = request.node.get_closest_marker("session_hours")
    if marker:
        monkeypatch.setenv("VIREO_SESSION_HOURS", str(marker.args[0]))
    monkeypatch.setenv("VIREO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VIREO_DICOM_PORT", str(free_port()))
    monkeypatch.setenv("VIREO_ADMIN_PASSWORD", ADMIN_PASSWORD)
    yield


async def log_in(user: User, username: str = "admin", password: str = ADMIN_PASSWORD) -> None:
    await user.open("/")
    await user.should_see(marker="login-button")
    user.find(marker="username").type(username)
    user.find(marker="password").type(password)
    user.find(marker="login-button").click()


async def test_login_shell_and_logout(user: User) -> None:
    await log_in(user)
    await user.should_see("Datasets", retries=50)
    await user.should_see(marker="user-menu")
    await user.should_see(marker="gallery")
    user.find(marker="menu-logout").click()
    await user.should_see(marker="login-button")
    await user.open("/settings")
    await user.should_see(marker="login-button")  # the session is gone


async def test_wrong_password_is_refused(user: User) -> None:
    await log_in(user, password="not-the-password")
    await user.should_see("Wrong user name or password.", retries=50)
    await user.should_not_see(marker="user-menu")


async def test_settings_creates_token_and_user(user: User) -> None:
    await log_in(user)
    await user.should_see(marker="user-menu", retries=50)  # argon2 and the first page load take a moment
    await user.open("/settings")
    await user.should_see("API tokens")
    user.find(marker="token-name").type("ci-script")
    user.find(marker="create-token").click()
    await user.should_see(marker="new-token")
    assert await _rows(user, "token-table", "name", until="ci-script") == ["ci-script"]
    user.find(marker="new-username").type("carol")
    user.find(marker="new-password").type("carol-password")
    user.find(marker="add-user").click()
    assert "carol" in await _rows(user, "user-table", "username", until="carol")


async def _rows(user: User, marker: str, field: str, until: str) -> list[str]:
    """Table rows are data, not text the user fixture reads: look at the table element itself."""
    values: list[str] = []
    for _ in range(100):
        (table,) = user.find(marker=marker).elements
        values = [row[field] for row in table.rows]  # type: ignore[attr-defined]
        if until in values:
            break
        await asyncio.sleep(0.05)
    return values


def _flattened(routes: list[object]) -> list[object]:
    """FastAPI keeps an included router as one lazy route; the walk needs the routes inside it."""
    flat: list[object] = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        flat.extend(_flattened(inner.routes) if inner is not None else [route])
    return flat


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


async def test_every_route_requires_login(user: User) -> None:
    """Walk every registered route and method without credentials."""
    await user.open("/login")  # the app is up
    checked = 0
    async with httpx.AsyncClient(transport=httpx.ASGITransport(nicegui_app), base_url="http://test") as anonymous:
        for route in _flattened(nicegui_app.routes):
            if isinstance(route, WebSocketRoute):
                continue
            if isinstance(route, Mount):
                path, methods = route.path.rstrip("/") + "/x", {"GET"}
            elif isinstance(route, Route):
                path, methods = _concrete(route.path), (route.methods or {"GET"}) - {"HEAD"}
            else:
                continue
            for method in methods:
                response = await anonymous.request(method, path)
                checked += 1
                if path in PUBLIC:
                    assert response.status_code == 200, (method, path)
                elif path.startswith("/_nicegui/") and not path.startswith(("/_nicegui/client/", "/_nicegui/auto/")):
                    continue  # NiceGUI's own static assets (scripts, styles) are public
                elif path.startswith("/_nicegui_ws"):
                    continue  # the websocket of a page: only pages that were served (after login) have one
                elif path.startswith(("/api", "/dicomweb")):
                    assert response.status_code == 401, (method, path, response.status_code)
                else:
                    assert response.status_code in (302, 303, 307), (method, path, response.status_code)
                    assert response.headers["location"].startswith("/login"), (method, path)
    assert checked > 20



@pytest.mark.session_hours(0.0004)  # 1.4 s
async def test_session_expires(user: User) -> None:
    await log_in(user)
    await user.should_see(marker="user-menu", retries=50)  # argon2 and the first page load take a moment
    await asyncio.sleep(2)
    await user.open("/settings")
    await user.should_see(marker="login-button")
