"""Limits on password guessing, on the login page and for HTTP Basic alike.

Three limits, all over a sliding window (15 minutes):

* per user and address: a few failures, then 429 until the window lets the oldest go;
* per address over all users: one address cannot try many names;
* per account over all addresses: past a few failures every further attempt must wait a
  delay that doubles with each failure (capped), so guesses from many addresses slow down
  to a trickle. It is a slow-down, not a lock-out: the right password still works once the
  delay has passed, so an attacker cannot keep the owner out by failing on purpose.

The address is the one uvicorn reports: the socket peer, or the client a configured trusted
proxy names (`VIREO_TRUSTED_PROXIES`); `X-Forwarded-For` from anyone else is ignored.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque


class TooManyAttempts(Exception):
    """Refused before the password is even checked; `retry_after` is in seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after} s")
        self.retry_after = retry_after


class LoginThrottle:
    """Sliding-window limits on failed logins: per (user, address), per address, and a per-account slow-down.

    An attempt counts as failed from the moment it starts, so a burst of parallel guesses
    is limited as strictly as one after another; a success takes its attempt back. Parallel
    requests carrying the *same* Basic credentials are one attempt, not many (app/auth.py
    verifies them once), and credentials verified before skip the throttle altogether.
    """

    MAX_KEYS = 10_000  # beyond this many tracked names/addresses, sweep the stale ones at once

    def __init__(self, per_user: int = 5, per_address: int = 20, window: float = 900.0,
                 account_free: int = 10, account_delay: float = 1.0, account_max_delay: float = 300.0) -> None:
        self.per_user = per_user
        self.per_address = per_address
        self.window = window
        self.account_free = account_free
        self.account_delay = account_delay
        self.account_max_delay = account_max_delay
        self._failures: dict[tuple[str, ...], deque[float]] = {}
        self._lock = threading.Lock()

    def account_wait(self, failures: int) -> float:
        """Seconds an account's next attempt must wait after its last failure, having `failures` in the window."""
        if failures < self.account_free:
            return 0.0
        return float(min(self.account_delay * 2 ** (failures - self.account_free), self.account_max_delay))

    def attempt(self, username: str, address: str) -> float:
        """Start an attempt; raises TooManyAttempts while any limit holds. Returns the attempt's stamp."""
        now = time.monotonic()
        pair, anyone, account = ("user+address", username, address), ("address", address), ("account", username)
        with self._lock:
            if len(self._failures) > self.MAX_KEYS:
                self._sweep(now)
            for key, limit in ((pair, self.per_user), (anyone, self.per_address)):
                failures = self._prune(key, now)
                if len(failures) >= limit:
                    raise TooManyAttempts(max(1, math.ceil(failures[0] + self.window - now)))
            failures = self._prune(account, now)
            if failures:
                ready = failures[-1] + self.account_wait(len(failures))
                if ready > now:
                    raise TooManyAttempts(max(1, math.ceil(ready - now)))
            for key in (pair, anyone, account):
                self._failures.setdefault(key, deque()).append(now)
        return now

    def succeeded(self, username: str, address: str, stamp: float) -> None:
        """The attempt was right: forget this user's failures and take the attempt back from the address."""
        with self._lock:
            self._failures.pop(("user+address", username, address), None)
            self._failures.pop(("account", username), None)
            failures = self._failures.get(("address", address))
            if failures is not None and stamp in failures:
                failures.remove(stamp)

    def _prune(self, key: tuple[str, ...], now: float) -> deque[float]:
        failures = self._failures.get(key)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[key]  # never keep an entry per name a stranger tried
        return failures

    def _sweep(self, now: float) -> None:
        for key in list(self._failures):
            self._prune(key, now)
