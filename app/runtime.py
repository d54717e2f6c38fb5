"""Where routers and pages find the running Vireo's services (set once at start-up)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.services import Services

_services: Services | None = None


def set_services(services: Services | None) -> None:
    global _services
    _services = services


def current_services() -> Services:
    if _services is None:
        raise RuntimeError("Vireo's services are not running")
    return _services
