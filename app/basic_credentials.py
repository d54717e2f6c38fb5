"""Remembering verified HTTP Basic credentials, and verifying each one once however many requests ask at a time.

argon2 is slow on purpose (~100 ms and a lot of memory per check), and API clients such as a
viewer send the same Basic header on every request, often six or more in parallel. Without
care, each of them verified the password on its own when the cache expired: QIDO went from
3 ms to hundreds, and since the throttle counts an attempt as failed from its start
(app/login_throttle.py), the sixth parallel request with the *right* password got 429.

So: a verified credential is remembered for `ttl` seconds (no check at all), then known as
once-correct for much longer: a request carrying it is let in at once while one check runs
beside it (outside the failed-login throttle, since whoever sends it knew the password), and
a failed check forgets it, so the next request is refused. Concurrent checks of one
credential share one verification (single-flight). Only the SHA-256 of user name and password
is kept. Every change to a user made through Vireo (password, disabling, removal) forgets all
of it at once (`clear`); the background check covers changes made to the database elsewhere.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from core.accounts import Principal

log = logging.getLogger(__name__)
T = TypeVar("T")
KNOWN_SECONDS = 24 * 3600.0
MAX_ENTRIES = 10_000


class CredentialCache:
    """key → principal, fresh for `ttl` seconds, then remembered as once-correct for `known_seconds`."""

    def __init__(self, ttl: float = 60.0, known_seconds: float = KNOWN_SECONDS) -> None:
        self.ttl = ttl
        self.known_seconds = known_seconds
        self._entries: dict[str, tuple[Principal, float, float]] = {}  # principal, fresh until, known until
        self._lock = threading.Lock()
        self.generation = 0  # counts `clear`s: a check that began before one must not put back what it cleared

    @staticmethod
    def key(username: str, password: str) -> str:
        return hashlib.sha256(f"{username}\0{password}".encode()).hexdigest()

    def get(self, key: str) -> Principal | None:
        """The principal if these credentials were verified within the last `ttl` seconds."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[1] < time.monotonic():
                return None
            return entry[0]

    def known(self, key: str) -> Principal | None:
        """The principal if these exact credentials were correct before (and no user has changed since), fresh or not."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[2] < time.monotonic():
                del self._entries[key]
                return None
            return entry[0]

    def forget(self, key: str) -> None:
        """These credentials are wrong now (the password changed elsewhere): check them as any others from now on."""
        with self._lock:
            self._entries.pop(key, None)

    def put(self, key: str, principal: Principal, ttl: float | None = None, generation: int | None = None) -> None:
        """Remember verified credentials; ignored when a user changed (`clear`) since `generation` was read."""
        now = time.monotonic()
        with self._lock:
            if generation is not None and generation != self.generation:
                return
            if len(self._entries) > MAX_ENTRIES:
                self._entries = {k: e for k, e in self._entries.items() if e[2] >= now}
            self._entries[key] = (principal, now + (self.ttl if ttl is None else ttl), now + self.known_seconds)

    def clear(self) -> None:
        """Forget everything: called whenever a user is changed, disabled or removed."""
        with self._lock:
            self._entries.clear()
            self.generation += 1


class _Flight(Generic[T]):
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None


class SingleFlight(Generic[T]):
    """Runs one call per key at a time; whoever asks for the same key meanwhile waits for that call's answer.

    Blocking (threads): the callers are requests in Starlette's thread pool.
    """

    def __init__(self) -> None:
        self._flights: dict[str, _Flight[T]] = {}
        self._lock = threading.Lock()

    def start(self, key: str, call: Callable[[], T]) -> None:
        """Run `call` in a thread of its own unless a call for `key` is under way (an error is logged)."""
        with self._lock:
            if key in self._flights:
                return
            self._flights[key] = flight = _Flight[T]()
        threading.Thread(target=self._lead, args=(key, flight, call), name="credential-check", daemon=True).start()

    def _lead(self, key: str, flight: _Flight[T], call: Callable[[], T]) -> None:
        try:
            flight.result = call()
        except Exception as exc:  # kept for anyone waiting on this flight
            log.exception("checking remembered credentials again failed")
            flight.error = exc
        finally:
            with self._lock:
                self._flights.pop(key, None)
            flight.done.set()

    def run(self, key: str, call: Callable[[], T]) -> T:
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            return flight.result  # type: ignore[return-value]
        try:
            flight.result = call()
            return flight.result
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                self._flights.pop(key, None)
            flight.done.set()
