"""Remembered Basic credentials never outlive a password change, however the checks interleave.

The slow password check (argon2 in `app.auth.login`) is replaced by one that reads a password
table and then waits for the test to let it finish, so the order of "check began", "password
changed" and "check ended" is the test's, not the scheduler's. The real server-side check of
the same rule, with real timing, is tests/test_ohif_defects.py.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from app import auth
from app.basic_credentials import CredentialCache, SingleFlight
from core.accounts import Principal


class SlowCheck:
    """A password table, and checks that read it at once but answer only when released."""

    def __init__(self) -> None:
        self.passwords = {"olga": "one"}
        self.release = threading.Event()
        self.started = threading.Semaphore(0)

    def login(self, username: str, password: str, address: str, *, throttled: bool = True) -> Principal | None:
        correct = self.passwords.get(username) == password  # the database is read before the slow hash
        self.started.release()
        assert self.release.wait(10)
        return Principal(user_id=7, username=username, is_admin=False) if correct else None


@pytest.fixture
def check(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowCheck]:
    slow = SlowCheck()
    monkeypatch.setattr(auth, "login", slow.login)
    monkeypatch.setattr(auth, "credentials", CredentialCache(ttl=-1.0))
    monkeypatch.setattr(auth, "verifications", SingleFlight())
    monkeypatch.setattr(auth, "current_services", lambda: SimpleNamespace(settings=SimpleNamespace(credential_cache_seconds=-1.0)))
    yield slow
    slow.release.set()


def header(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode()


def test_a_check_begun_before_a_password_change_is_not_the_answer_after_it(check: SlowCheck) -> None:
    check.release.set()
    assert auth._basic(header("olga", "one"), "127.0.0.1") is not None  # verified: now once-correct, never fresh
    assert check.started.acquire(timeout=10)
    check.release.clear()
    # a request with the old password starts a check beside it and is let in: it knew the password
    assert auth._basic(header("olga", "one"), "127.0.0.1") is not None
    assert check.started.acquire(timeout=10)  # that check has read the old password ...
    check.passwords["olga"] = "two"  # ... and the password changes before it ends (the API clears the cache after committing)
    auth.credentials.clear()

    answer: list[Principal | None] = []
    after = threading.Thread(target=lambda: answer.append(auth._basic(header("olga", "one"), "127.0.0.1")))
    after.start()
    assert check.started.acquire(timeout=10), "the request after the change must run a check of its own, not wait for the old one"
    check.release.set()
    after.join(10)
    assert answer == [None]
    assert auth._basic(header("olga", "one"), "127.0.0.1") is None
    assert auth._basic(header("olga", "two"), "127.0.0.1") is not None
