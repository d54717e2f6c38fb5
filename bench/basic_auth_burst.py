#!/usr/bin/env python3
"""Parallel HTTP Basic requests right after the credential cache expires (issue 16, item 0).

A viewer sends the same Basic header on six or more requests at a time. Before the fix, the
first burst after the 60 s credential cache expired verified the password once per request
(argon2 each) and the sixth got 429 from the failed-login throttle. This starts a Vireo with
the cache shortened to 1 s and, for each round, waits for the cache to expire, then fires
`--parallel` QIDO-RS study searches at once: it prints their statuses and the slowest one,
then the same burst again while the credentials are remembered.

    .venv/bin/python bench/basic_auth_burst.py [--rounds 5] [--parallel 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.vireo import ADMIN_PASSWORD, VireoProcess  # noqa: E402

CACHE_SECONDS = 1.0


def burst(client: httpx.Client, parallel: int) -> list[tuple[int, float]]:
    """(status, milliseconds) of `parallel` simultaneous QIDO-RS study searches."""

    def one(_: int) -> tuple[int, float]:
        started = time.perf_counter()
        status = client.get("/dicomweb/studies", auth=("admin", ADMIN_PASSWORD)).status_code
        return status, (time.perf_counter() - started) * 1000

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(one, range(parallel)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        vireo = VireoProcess(Path(tmp) / "data", VIREO_CREDENTIAL_CACHE_SECONDS=str(CACHE_SECONDS)).start()
        try:
            with httpx.Client(base_url=vireo.url, timeout=60) as client:
                first = burst(client, args.parallel)  # never verified: one argon2 check for the whole burst
                print(f"first use: {sorted({s for s, _ in first})} slowest {max(ms for _, ms in first):.0f} ms")
                expired, cached = [], []
                for n in range(1, args.rounds + 1):
                    time.sleep(CACHE_SECONDS + 0.2)
                    after = burst(client, args.parallel)
                    again = burst(client, args.parallel)
                    expired += after
                    cached += again
                    print(f"round {n}: after expiry {sorted({s for s, _ in after})} slowest {max(ms for _, ms in after):.0f} ms;"
                          f" remembered {sorted({s for s, _ in again})} slowest {max(ms for _, ms in again):.0f} ms")
                refused = sum(1 for s, _ in expired + cached if s != 200)
                print(f"{len(expired) + len(cached)} requests, {refused} not 200; median after expiry "
                      f"{statistics.median(ms for _, ms in expired):.0f} ms, remembered {statistics.median(ms for _, ms in cached):.0f} ms")
        finally:
            vireo.stop()


if __name__ == "__main__":
    main()
