"""Issue 17, item 10: a registered remote is no port scanner — every way of not reaching it reads the same.

An admin (or whoever has an admin's password) registers "remotes" at addresses of the network
Vireo sits in and reads what "Sync now" says. Before, the messages told a closed port from a
filtered one, a TLS service from a plain one, a missing host from a present one, and showed
the first 500 characters of whatever HTTP service answered. Now each says "could not reach
<name>"; what happened is in the server log only.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from federation.identity import InstanceKey
from tests.security.hostile_remote import HostileRemote, plain_http, silent
from tests.support.vireo import VireoProcess, free_port

pytestmark = [pytest.mark.timeout(180)]

BANNER = b"Intranet admin console - build 4.2.1-secret-banner"


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, HostileRemote]]:
    started = {
        "silent": HostileRemote(silent, max_seconds=90),
        "web": HostileRemote(plain_http(BANNER), max_seconds=90),
        "greeter": HostileRemote(silent, max_seconds=90, greeting=b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"),
    }
    yield started
    for server in started.values():
        server.stop()


def test_every_failure_to_reach_reads_the_same(tmp_path_factory: pytest.TempPathFactory, servers: dict[str, HostileRemote]) -> None:
    vireo = VireoProcess(tmp_path_factory.mktemp("probe") / "site-a", VIREO_INSTANCE_NAME="site-a", VIREO_FEDERATION_DEADLINE="3").start()
    probes = {
        "closed-port": ("http", "127.0.0.1", free_port()),  # connection refused
        "silent-port": ("http", "127.0.0.1", servers["silent"].port),  # accepts, never answers: a timeout
        "tls-on-plain": ("https", "127.0.0.1", servers["greeter"].port),  # a TLS handshake with a plain HTTP service
        "no-such-host": ("http", "vireo-probe.invalid", 80),  # DNS
        "other-service": ("http", "127.0.0.1", servers["web"].port),  # some HTTP service that is not a Vireo
    }
    try:
        with vireo.client() as c:
            for name, (protocol, host, port) in probes.items():
                response = c.post("/api/instances", json={
                    "name": name, "protocol": protocol, "host": host, "port": port, "token": str(uuid.uuid4()),
                    "public_key": InstanceKey.generate().public_key, "fernet_key": None, "ssl_verify": True,
                })
                assert response.status_code == 201, response.text
            outcome = c.post("/api/instances/sync", timeout=60).json()
            for name in probes:
                expected = f"could not reach {name} (the server log has the details)"
                assert outcome[name] == {"ok": False, "error": expected}, outcome
                doc = c.get(f"/api/instances/{name}").json()
                assert doc["last_error"] == expected and doc["health"] == "unreachable", doc
            shown = " ".join(str(d["last_error"]) for d in c.get("/api/instances").json()[1:]) + str(outcome)
            assert "secret-banner" not in shown and "404" not in shown and "refused" not in shown.lower()
        log = vireo.log()
        # the details are for the server's operator: refused, timed out, TLS, DNS, a non-Vireo answer
        for detail in ("ConnectError", "no complete answer within 3 s", "SSL", "vireo-probe.invalid", "not signed with the public key"):
            assert detail in log, detail
    finally:
        vireo.stop()
