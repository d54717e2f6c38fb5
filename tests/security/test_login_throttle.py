"""Password guessing against a real Vireo: X-Forwarded-For buys no new tries, and many addresses meet a slow-down.

Linux routes all of 127.0.0.0/8 to the loopback device, so binding the client to 127.0.0.2,
127.0.0.3, … gives the server really different peer addresses: the "many addresses" of a
distributed guesser, without leaving the machine. Every loop is bounded (at most 30 tries).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from tests.support.vireo import VireoProcess

pytestmark = pytest.mark.slow

FRANK = ("frank", "frank-password")


def from_address(vireo: VireoProcess, address: str) -> httpx.Client:
    """A client whose connections come from `address` (one of 127.0.0.0/8)."""
    return httpx.Client(base_url=vireo.url, timeout=30, transport=httpx.HTTPTransport(local_address=address))


def guess(client: httpx.Client, password: str = "guess-guess", **headers: str) -> httpx.Response:
    return client.get("/api/me", auth=(FRANK[0], password), headers=headers)


def with_frank(vireo: VireoProcess) -> VireoProcess:
    with vireo.client() as admin:
        assert admin.post("/api/users", json={"username": FRANK[0], "password": FRANK[1]}).status_code == 201
    return vireo


def test_forwarded_for_from_anyone_does_not_reset_the_limit(start_vireo: Callable[..., VireoProcess]) -> None:
    vireo = with_frank(start_vireo())
    answers = []
    with httpx.Client(base_url=vireo.url, timeout=30) as attacker:
        for n in range(30):
            answers.append(guess(attacker, **{"X-Forwarded-For": f"203.0.113.{n + 1}"}).status_code)
    assert answers[:5] == [401] * 5
    assert answers[5:] == [429] * 25  # every later guess refused, whatever address it claims


def test_forwarded_for_is_believed_from_a_configured_proxy_only(start_vireo: Callable[..., VireoProcess]) -> None:
    vireo = with_frank(start_vireo(VIREO_TRUSTED_PROXIES="127.0.0.1"))
    with from_address(vireo, "127.0.0.1") as proxy:
        for _ in range(5):
            assert guess(proxy, **{"X-Forwarded-For": "198.51.100.7"}).status_code == 401
        assert guess(proxy, **{"X-Forwarded-For": "198.51.100.7"}).status_code == 429  # the client the proxy names is limited
        assert guess(proxy, **{"X-Forwarded-For": "198.51.100.8"}).status_code == 401  # another client behind the proxy is not
    with vireo.client() as admin:  # another account, so that frank's slow-down plays no part below
        assert admin.post("/api/users", json={"username": "gina", "password": "gina-password"}).status_code == 201
    with from_address(vireo, "127.0.0.9") as stranger:  # not a configured proxy: its header is ignored
        answers = [stranger.get("/api/me", auth=("gina", "guess-guess"), headers={"X-Forwarded-For": f"198.51.100.{20 + n}"}).status_code
                   for n in range(8)]
    assert answers == [401] * 5 + [429] * 3


def test_many_addresses_meet_a_growing_delay_not_a_lock_out(start_vireo: Callable[..., VireoProcess]) -> None:
    vireo = with_frank(start_vireo())
    for n in range(5):  # 10 failures from 5 addresses: each address stays under its own limit
        with from_address(vireo, f"127.0.0.{n + 2}") as bot:
            assert [guess(bot).status_code for _ in range(2)] == [401, 401]
    with from_address(vireo, "127.0.0.20") as fresh:  # an address that never failed still meets the account's slow-down
        heard = 0
        for _ in range(10):  # two more guesses get heard, each only after its delay
            answer = guess(fresh)
            if answer.status_code == 429:
                assert "too many failed logins" in answer.json()["detail"]
                time.sleep(int(answer.headers["retry-after"]) + 0.2)
                continue
            assert answer.status_code == 401
            heard += 1
            if heard == 2:
                break
        assert heard == 2
        refused = guess(fresh, password=FRANK[1])
        assert refused.status_code == 429  # 12 failures: even the right password waits (4 s by now, where the first delay was 1 s)
        assert int(refused.headers["retry-after"]) >= 2
        time.sleep(int(refused.headers["retry-after"]) + 0.2)
        assert guess(fresh, password=FRANK[1]).status_code == 200  # ...and is let in then: no lock-out
        assert guess(fresh).status_code == 401  # and the slow-down starts over
