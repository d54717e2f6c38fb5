"""`/api/instances` against a running Vireo: the local instance, remotes, validation, sync with a dead remote."""

from __future__ import annotations

import uuid

import httpx
import pytest
from cryptography.fernet import Fernet

from federation.identity import InstanceKey
from tests.support.vireo import VireoProcess, free_port


def _remote(name: str = "site-b", **overrides: object) -> dict:
    return {"name": name, "protocol": "http", "host": "127.0.0.1", "port": free_port(), "token": str(uuid.uuid4()),
            "public_key": InstanceKey.generate().public_key, "fernet_key": None, "ssl_verify": True, **overrides}


def test_local_instance_is_created_with_a_token(vireo: VireoProcess) -> None:
    with vireo.client() as c:
        local = c.get("/api/instances/local").json()
        assert uuid.UUID(local["token"]).version == 4 and len(local["token"]) == 36
        assert local["fernet_key"] is None and local["fernet_encryption"] is False
        assert local["port"] == vireo.http_port and local["protocol"] == "http"
        for key in ("name", "host", "ssl_verify", "automatic_sync", "sync_interval", "automatic_execution", "allowed_dags", "allowed_datasets"):
            assert key in local
        listed = c.get("/api/instances").json()
        assert listed[0]["name"] == local["name"] and listed[0]["remote"] is False


def test_change_local_settings_and_keys(vireo: VireoProcess) -> None:
    with vireo.client() as c:
        before = c.get("/api/instances/local").json()
        on = c.put("/api/instances/local", json={"fernet_encryption": True, "automatic_execution": False, "sync_interval": 30,
                                                  "allowed_dags": ["collect-metadata"]}).json()
        assert len(on["fernet_key"]) == 44 and Fernet(on["fernet_key"].encode())
        assert on["automatic_execution"] is False and on["sync_interval"] == 30 and on["allowed_dags"] == ["collect-metadata"]
        rotated = c.put("/api/instances/local", json={"rotate_fernet_key": True}).json()
        assert rotated["fernet_key"] != on["fernet_key"] and len(rotated["fernet_key"]) == 44
        renewed = c.put("/api/instances/local", json={"regenerate_token": True}).json()
        assert renewed["token"] != before["token"] and uuid.UUID(renewed["token"]).version == 4
        off = c.put("/api/instances/local", json={"fernet_encryption": False}).json()
        assert off["fernet_key"] is None  # the definition carries no key while encryption is off
        # a client may send back what it read
        assert c.put("/api/instances/local", json=off).status_code == 200


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"allowed_dags": ["no-such-dag"]}, "unknown DAG"),
        ({"allowed_datasets": ["no-such-dataset"]}, "unknown dataset"),
        ({"sync_interval": 0}, "sync_interval"),
        ({"port": 70000}, "port"),
        ({"protocol": "ftp"}, "protocol"),
        ({"token": "not-a-uuid"}, "UUID"),
        ({"fernet_key": "short"}, "Fernet key"),
        ({"name": "sync"}, "reserved"),  # a new name is taken until the first remote (tests/test_instance_health.py)
    ],
)
def test_bad_local_settings_get_reasons(vireo: VireoProcess, body: dict, reason: str) -> None:
    with vireo.client() as c:
        response = c.put("/api/instances/local", json=body)
        assert response.status_code == 400 and reason in response.json()["detail"], response.text
    assert c_unknown_field(vireo) == 422


def c_unknown_field(vireo: VireoProcess) -> int:
    with vireo.client() as c:
        return c.put("/api/instances/local", json={"colour": "blue"}).status_code


def test_register_edit_and_remove_remotes(vireo: VireoProcess) -> None:
    key = Fernet.generate_key().decode()
    definition = _remote("site-b", fernet_key=key)
    with vireo.client() as c:
        created = c.post("/api/instances", json=definition)
        assert created.status_code == 201, created.text
        doc = created.json()
        assert {k: doc[k] for k in definition} == definition and doc["remote"] is True and doc["health"] == "never synced"
        assert c.post("/api/instances", json=definition).status_code == 409
        # Kaapana's field names, as its "copy instance definition" gives them
        kaapana = {"instance_name": "site-k", "host": "10.0.0.9", "port": 443, "protocol": "https", "token": str(uuid.uuid4()), "ssl_check": False}
        assert c.post("/api/instances", json=kaapana).json()["ssl_verify"] is False
        changed = c.put("/api/instances/site-b", json={"port": 8443, "ssl_verify": False, "fernet_key": None}).json()
        assert changed["port"] == 8443 and changed["ssl_verify"] is False and changed["fernet_key"] is None
        assert c.put("/api/instances/site-x", json={"port": 1}).status_code == 404
        assert c.put("/api/instances/site-b", json={"name": "renamed"}).status_code == 422
        assert [i["name"] for i in c.get("/api/instances").json()[1:]] == ["site-b", "site-k"]
        assert c.get("/api/instances/site-b").json()["port"] == 8443
        assert c.delete("/api/instances/site-k").json()["name"] == "site-k"
        assert c.delete("/api/instances/site-k").status_code == 404
        assert c.delete("/api/instances/site-b").status_code == 200


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"token": "12345"}, "UUID"),
        ({"fernet_key": "x" * 44}, "Fernet key"),
        ({"name": "local"}, "reserved"),
        ({"name": "bad/name"}, "instance name"),
        ({"port": 0}, "port"),
        ({"host": "http://x"}, "host"),
        ({"ca_bundle": "not pem"}, "PEM"),
    ],
)
def test_bad_definitions_get_reasons(vireo: VireoProcess, overrides: dict, reason: str) -> None:
    with vireo.client() as c:
        response = c.post("/api/instances", json={**_remote("site-bad"), **overrides})
        assert response.status_code == 400 and reason in response.json()["detail"], response.text


def test_own_name_is_refused(vireo: VireoProcess) -> None:
    with vireo.client() as c:
        name = c.get("/api/instances/local").json()["name"]
        response = c.post("/api/instances", json=_remote(name))
        assert response.status_code == 400 and "own name" in response.json()["detail"]


def test_sync_with_an_unreachable_remote_records_its_health(vireo: VireoProcess) -> None:
    with vireo.client() as c:
        assert c.post("/api/instances", json=_remote("site-dead")).status_code == 201
        for _ in range(3):
            outcome = c.post("/api/instances/sync").json()["site-dead"]
            assert outcome["ok"] is False and outcome["error"] == "could not reach site-dead (the server log has the details)"
        dead = c.get("/api/instances/site-dead").json()
        # never reached is told apart from offline (reached once, then missed syncs)
        assert dead["health"] == "unreachable" and dead["last_seen"] is None and dead["missed_syncs"] == 3 and dead["last_error"]
        assert "ConnectError" in vireo.log()  # what went wrong is in the server log, not in what the admin is shown
        c.delete("/api/instances/site-dead")


def test_instance_routes_need_an_admin_and_sync_route_a_signature(vireo: VireoProcess) -> None:
    assert httpx.get(f"{vireo.url}/api/instances").status_code == 401
    with vireo.client() as c:
        assert c.post("/api/users", json={"username": "uma", "password": "uma-password"}).status_code == 201
    assert httpx.get(f"{vireo.url}/api/instances", auth=("uma", "uma-password")).status_code == 403
    unsigned = httpx.post(f"{vireo.url}/api/federation/sync", json={})
    assert unsigned.status_code == 401 and "unsigned" in unsigned.json()["detail"]
    # a user's credentials are no signature
    assert httpx.post(f"{vireo.url}/api/federation/sync", json={}, auth=vireo.auth).status_code == 401
    assert httpx.get(f"{vireo.url}/api/federation/sync").status_code == 401
    with vireo.client() as c:
        actions = [e["action"] for e in c.get("/api/audit").json()]
        assert "signature refused" in actions
