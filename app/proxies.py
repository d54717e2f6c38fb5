"""Which reverse proxies may tell Vireo who the client is (`X-Forwarded-For`, `X-Forwarded-Proto`).

Anyone can send these headers, so believing them from everyone lets a guesser pick a new
address for every password and never meet the login throttle. uvicorn believes them only
from the addresses handed to it here (`VIREO_TRUSTED_PROXIES`, default: nobody); from a
trusted proxy it takes the right-most address that is not itself a trusted proxy.
"""

from __future__ import annotations

import ipaddress


def parse_trusted_proxies(text: str) -> list[str]:
    """Addresses and networks (CIDR) from a comma-separated list; raises ValueError naming a bad entry."""
    entries = [item.strip() for item in text.split(",") if item.strip()]
    for entry in entries:
        if entry == "*":
            raise ValueError("'*' would believe X-Forwarded-For from anyone; list the proxies' addresses or networks")
        try:
            ipaddress.ip_network(entry, strict=False) if "/" in entry else ipaddress.ip_address(entry)
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/24)") from None
    return entries


def uvicorn_options(text: str) -> dict[str, object]:
    """What ui.run/uvicorn needs: no proxy headers at all unless proxies are configured."""
    trusted = parse_trusted_proxies(text)
    if not trusted:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": ",".join(trusted)}
