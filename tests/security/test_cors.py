"""`VIREO_CORS_ORIGINS` must name origins: `*` (or `null`) with credentials would open /dicomweb to every web page.

The real `python main.py` is started with each bad value and must stop at once with a message
that says what is wrong and what to write instead; a proper list still works.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.support.vireo import VireoProcess


@pytest.mark.parametrize(("value", "words"), [
    ("*", "'*' would let any web site read /dicomweb"),
    ("https://viewer.example.org, *", "'*' would let any web site read /dicomweb"),
    ("null", "'null' is the origin of any sandboxed page"),
    ("viewer.example.org", "not an origin: expected scheme://host[:port]"),
])
def test_a_wildcard_or_malformed_origin_is_refused_at_start(start_vireo: Callable[..., VireoProcess], value: str, words: str) -> None:
    with pytest.raises(RuntimeError) as refused:
        start_vireo(VIREO_CORS_ORIGINS=value)
    assert "invalid value for VIREO_CORS_ORIGINS" in str(refused.value) and words in str(refused.value)


def test_listed_origins_still_work(start_vireo: Callable[..., VireoProcess]) -> None:
    vireo = start_vireo(VIREO_CORS_ORIGINS="http://viewer.example, https://ohif.example.org")
    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    allowed = httpx.options(f"{vireo.url}/dicomweb/studies", headers={"Origin": "https://ohif.example.org", **preflight})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://ohif.example.org"
    assert allowed.headers["access-control-allow-credentials"] == "true"
    other = httpx.options(f"{vireo.url}/dicomweb/studies", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in other.headers
