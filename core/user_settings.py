"""Per-user settings stored in the database, keyed by user name and a setting name.

Kaapana keeps its gallery configuration in one browser's localStorage: lost on a cache clear,
shared by everyone using that browser, absent on the next computer. Here a setting belongs to
the account, so it follows the user and never leaks to another.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete
from sqlmodel import Session, select

from core.models import UserSetting
from core.timeutil import utcnow


def read_setting(session: Session, username: str, key: str) -> dict[str, Any] | None:
    row = session.exec(select(UserSetting).where(UserSetting.username == username, UserSetting.key == key)).first()
    return dict(row.value) if row is not None else None


def write_setting(session: Session, username: str, key: str, value: dict[str, Any]) -> None:
    row = session.exec(select(UserSetting).where(UserSetting.username == username, UserSetting.key == key)).first()
    if row is None:
        row = UserSetting(username=username, key=key, value=value)
    else:
        row.value = value
        row.updated = utcnow()
    session.add(row)
    session.flush()


def clear_setting(session: Session, username: str, key: str) -> None:
    session.execute(delete(UserSetting).where(UserSetting.username == username, UserSetting.key == key))  # type: ignore[arg-type]


VIEWER_KEY = "viewer"
VIEWER_CHOICES = ("quick", "ohif")


def read_viewer_choice(session: Session, username: str) -> str:
    """Which viewer the detail panel opens first for this user: 'quick' unless they chose 'ohif'."""
    stored = read_setting(session, username, VIEWER_KEY) or {}
    choice = stored.get("choice")
    return choice if choice in VIEWER_CHOICES else "quick"


def write_viewer_choice(session: Session, username: str, choice: str) -> None:
    if choice not in VIEWER_CHOICES:
        raise ValueError(f"the viewer is 'quick' or 'ohif', not {choice!r}")
    write_setting(session, username, VIEWER_KEY, {"choice": choice})
