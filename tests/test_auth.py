"""Authentication of /api against a running Vireo: Basic, bearer tokens, roles, rate limits."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.support.vireo import ADMIN_PASSWORD, VireoProcess


def test_health_is_public_and_everything_else_is_not(vireo: VireoProcess) -> None:
    assert httpx.get(f"{vireo.url}/api/health").json() == {"status": "ok"}
    for path in ("/api/series", "/api/datasets", "/api/series/1.2.3/thumbnail", "/api/users", "/api/tokens", "/dicomweb/studies", "/api/nothing-here"):
        response = httpx.get(f"{vireo.url}{path}")
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Basic")
        assert "authentication required" in response.json()["detail"]
    page = httpx.get(f"{vireo.url}/settings")
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fsettings"
    assert httpx.get(f"{vireo.url}/login").status_code == 200


def test_basic_wrong_password_and_bearer_tokens(vireo: VireoProcess) -> None:
    assert httpx.get(f"{vireo.url}/api/series", auth=("admin", "wrong")).status_code == 401
    assert httpx.get(f"{vireo.url}/api/series", auth=("nobody", "wrong")).status_code == 401
    with vireo.client() as admin:
        assert admin.get("/api/series").status_code == 200
        created = admin.post("/api/tokens", json={"name": "script"})
        assert created.status_code == 201
        token = created.json()["token"]
        assert admin.post("/api/tokens", json={"name": ""}).status_code == 400
    bearer = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{vireo.url}/api/series", headers=bearer).status_code == 200
    assert httpx.get(f"{vireo.url}/api/me", headers=bearer).json() == {"username": "admin", "is_admin": True}
    assert httpx.get(f"{vireo.url}/api/series", headers={"Authorization": "Bearer vireo_not-a-token"}).status_code == 401
    with vireo.client() as admin:
        listed = admin.get("/api/tokens").json()
        assert [t["name"] for t in listed] == ["script"] and "token" not in listed[0]
        assert admin.delete(f"/api/tokens/{listed[0]['id']}").status_code == 200
    assert httpx.get(f"{vireo.url}/api/series", headers=bearer).status_code == 401


def test_users_roles_and_disabling(vireo: VireoProcess) -> None:
    with vireo.client() as admin:
        assert admin.post("/api/users", json={"username": "dora", "password": "dora-password"}).status_code == 201
        assert admin.post("/api/users", json={"username": "dora", "password": "dora-password"}).status_code == 409
        assert admin.post("/api/users", json={"username": "eve", "password": "short"}).status_code == 400
    dora = ("dora", "dora-password")
    assert httpx.get(f"{vireo.url}/api/series", auth=dora).status_code == 200
    assert httpx.get(f"{vireo.url}/api/users", auth=dora).status_code == 403
    with vireo.client() as admin:
        assert admin.put("/api/users/dora", json={"disabled": True}).status_code == 200
        assert admin.put("/api/users/admin", json={"disabled": True}).status_code == 400  # not yourself
    assert httpx.get(f"{vireo.url}/api/series", auth=dora).status_code == 401  # at once, not after a cache expires
    with vireo.client() as admin:
        assert admin.delete("/api/users/dora").status_code == 200
        assert admin.delete("/api/users/dora").status_code == 404
    response = httpx.post(f"{vireo.url}/api/me/password", auth=vireo.auth, json={"current_password": "nope", "new_password": "whatever-123"})
    assert response.status_code == 400


def test_bad_requests_get_reasons(vireo: VireoProcess) -> None:
    with vireo.client() as c:
        response = c.post("/api/datasets", json={"name": "x/y"})
        assert response.status_code == 400 and "slash" in response.json()["detail"]
        response = c.post("/api/datasets", json={"name": "cohort", "series": ["1.2.3"]})
        assert response.status_code == 400 and "unknown series" in response.json()["detail"]
        assert c.post("/api/datasets", json={"nope": 1}).status_code == 422
        assert c.post("/api/datasets", json={"name": "empty"}).status_code == 201
        assert c.post("/api/datasets", json={"name": "empty"}).status_code == 409
        assert c.get("/api/datasets/empty").json()["series"] == 0
        assert c.post("/api/datasets/missing/series", json={"add": []}).status_code == 404
        assert c.delete("/api/datasets/empty").status_code == 200
        assert c.delete("/api/datasets/empty").status_code == 404
        assert c.get("/api/series", params={"q": "Modality:(CT"}).status_code == 400


def test_failed_logins_are_rate_limited(start_vireo: Callable[..., VireoProcess]) -> None:
    vireo = start_vireo()
    with vireo.client() as admin:
        assert admin.post("/api/users", json={"username": "frank", "password": "frank-password"}).status_code == 201
    for _ in range(5):
        assert httpx.get(f"{vireo.url}/api/series", auth=("frank", "guess-guess")).status_code == 401
    blocked = httpx.get(f"{vireo.url}/api/series", auth=("frank", "frank-password"))
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
    # other users from the same address are not locked out by frank's failures
    assert httpx.get(f"{vireo.url}/api/series", auth=("admin", ADMIN_PASSWORD)).status_code == 200


@pytest.mark.parametrize("header", ["Basic !!!", "Basic " + "YWRtaW4="])  # not base64 / no colon
def test_malformed_basic_header(vireo: VireoProcess, header: str) -> None:
    assert httpx.get(f"{vireo.url}/api/series", headers={"Authorization": header}).status_code == 401
