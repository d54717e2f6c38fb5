"""Issue 17, items 5 and 4 (the poller): a slow, a malformed and an endless remote cost their own lane, nothing more.

site-a polls a healthy Vireo (site-b) every second, beside small hostile servers registered as
remotes: one trickles its answer a byte a second, one sends a signed answer that is not the
protocol, one sends an endless body. site-a's deadline per remote is 4 s here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from federation.identity import InstanceKey
from tests.security.hostile_remote import (
    HostileRemote,
    endless_body,
    signed_answer,
    trickle,
)
from tests.support.vireo import VireoProcess, start_all

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

DEADLINE = 4.0
DEFINITION = ("name", "protocol", "host", "port", "token", "public_key", "fernet_key", "ssl_verify")
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VireoProcess, VireoProcess]]:
    root = tmp_path_factory.mktemp("hostile")
    a = VireoProcess(root / "site-a", VIREO_INSTANCE_NAME="site-a", VIREO_FEDERATION_DEADLINE=str(DEADLINE))
    b = VireoProcess(root / "site-b", VIREO_INSTANCE_NAME="site-b")
    try:
        start_all(a, b)
        with a.client() as ca, b.client() as cb:
            local_a, local_b = ca.get("/api/instances/local").json(), cb.get("/api/instances/local").json()
            assert ca.post("/api/instances", json={k: local_b[k] for k in DEFINITION}).status_code == 201
            assert cb.post("/api/instances", json={k: local_a[k] for k in DEFINITION}).status_code == 201
            assert cb.put("/api/instances/local", json={"automatic_sync": False}).status_code == 200
            assert ca.put("/api/instances/local", json={"automatic_sync": True, "sync_interval": 1}).status_code == 200
        yield a, b
    finally:
        b.stop()
        a.stop()


def _register(client: httpx.Client, name: str, server: HostileRemote, key: InstanceKey | None = None) -> None:
    response = client.post("/api/instances", json={
        "name": name, "protocol": "http", "host": "127.0.0.1", "port": server.port, "token": "2f1c0e7e-3b0a-4d8e-9a55-0c1f3f1a2b3c",
        "public_key": (key or InstanceKey.generate()).public_key, "fernet_key": None, "ssl_verify": True,
    })
    assert response.status_code == 201, response.text


def _last_success(client: httpx.Client, name: str) -> datetime | None:
    value = client.get(f"/api/instances/{name}").json()["last_success"]
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def _memory(process: VireoProcess) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of the Vireo process, in bytes."""
    assert process.process is not None
    fields = {}
    for line in Path(f"/proc/{process.process.pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def test_a_trickling_remote_stalls_neither_the_healthy_one_nor_sync_now(pair: tuple[VireoProcess, VireoProcess]) -> None:
    a, _ = pair
    slow = HostileRemote(trickle, max_seconds=90)
    with a.client() as c:
        try:
            _register(c, "site-slow", slow)
            # watch site-b's last success for 12 s while site-slow trickles: it must keep moving with the 1 s interval
            seen: list[tuple[float, datetime | None]] = []
            started = time.monotonic()
            while time.monotonic() - started < 12:
                seen.append((time.monotonic(), _last_success(c, "site-b")))
                time.sleep(0.5)
            changes = [t for (t, v), (_, before) in zip(seen[1:], seen) if v != before]
            gaps = [later - earlier for earlier, later in zip([started, *changes], [*changes, time.monotonic()])]
            assert len(changes) >= 4 and max(gaps) < 4.0, f"site-b synced at {changes} (gaps {gaps}) beside a trickling remote"
            assert slow.requests >= 2  # the slow one was tried, and given up on at its deadline, again and again

            clock = time.monotonic()
            outcome = c.post("/api/instances/sync", timeout=60).json()
            took = time.monotonic() - clock
            assert took < DEADLINE + 3.5, f"Sync now took {took:.1f} s with a {DEADLINE} s deadline"
            assert outcome["site-b"]["ok"] is True, outcome
            assert outcome["site-slow"]["ok"] is False and "site-slow" in outcome["site-slow"]["error"], outcome
            assert c.get("/api/instances/site-b").json()["health"] == "online"
            assert c.get("/api/instances/site-slow").json()["health"] != "online"
        finally:
            c.delete("/api/instances/site-slow")
            slow.stop()


def test_a_malformed_signed_answer_is_refused_and_the_remote_marked_failing(pair: tuple[VireoProcess, VireoProcess]) -> None:
    a, _ = pair
    key = InstanceKey.generate()  # the hostile remote's own key, registered: its answers verify, they just make no sense
    malformed = b'{"instance": "me", "jobs": "all of them", "acknowledged": {"x": 1}, "aborted": [{"id": 1}]}'
    evil = HostileRemote(signed_answer(key, "site-evil", malformed), max_seconds=60)
    with a.client() as c:
        try:
            _register(c, "site-evil", evil, key)
            response = c.post("/api/instances/sync", timeout=60)
            assert response.status_code == 200, response.text  # not a 500
            outcome = response.json()
            assert outcome["site-b"]["ok"] is True
            error = outcome["site-evil"]["error"]
            assert outcome["site-evil"]["ok"] is False and "site-evil's answer was refused" in error and "does not fit" in error, outcome
            doc = c.get("/api/instances/site-evil").json()
            assert doc["health"] == "failing" and doc["last_error"] == error and doc["last_seen"]  # it answered, wrongly
            assert "Traceback" not in error and "/work" not in error
        finally:
            c.delete("/api/instances/site-evil")
            evil.stop()


def test_an_endless_answer_is_cut_at_the_limit_and_memory_stays_bounded(pair: tuple[VireoProcess, VireoProcess]) -> None:
    a, _ = pair
    before = _memory(a)
    huge = HostileRemote(endless_body, max_seconds=60, max_bytes=600 * MIB)  # bounded: 600 MiB an answer at most, ~10x the limit
    with a.client() as c:
        try:
            _register(c, "site-huge", huge)
            outcome = c.post("/api/instances/sync", timeout=60).json()["site-huge"]
            assert outcome["ok"] is False and "larger than the limit of 67108864 bytes" in outcome["error"], outcome
            assert "VIREO_FEDERATION_MAX_RESPONSE" in outcome["error"]
            doc = c.get("/api/instances/site-huge").json()
            assert doc["health"] == "failing" and doc["last_error"] == outcome["error"]
        finally:
            c.delete("/api/instances/site-huge")
            huge.stop()
    after = _memory(a)
    assert huge.most_sent < 100 * MIB, f"the poller read {huge.most_sent / MIB:.0f} MiB of an endless answer"
    grew = (after["VmHWM"] - before["VmHWM"]) / MIB
    assert grew < 160, f"peak memory grew by {grew:.0f} MiB reading an endless answer (limit 64 MiB)"
    assert (after["VmRSS"] - before["VmRSS"]) / MIB < 160
