"""The tags a user used last, most recent first, kept with their account across page visits.

The tag row's dropdown starts with them (components.tag_bar). They live apart from the
Datasets settings (app.gallery_settings) under their own per-user key: the Settings dialog saves
and resets the whole settings document, and must neither wipe nor put back a stale list of what
was just used in another tab. Stored through core.user_settings, so no table or migration.
"""

from __future__ import annotations

from app.runtime import current_services
from core import user_settings
from core.tags import TagError, check_tag

SETTING_KEY = "recent-tags"
KEPT = 20  # the dropdown's head; older ones are still offered among all tags, by use


def load(username: str) -> list[str]:
    """The user's recent tags; anything stored that is no longer a valid tag is left out."""
    with current_services().db.session() as session:
        stored = user_settings.read_setting(session, username, SETTING_KEY) or {}
    tags: list[str] = []
    for value in stored.get("tags", []) if isinstance(stored.get("tags"), list) else []:
        try:
            tags.append(check_tag(str(value)))
        except TagError:
            continue
    return list(dict.fromkeys(tags))[:KEPT]


def save(username: str, tags: list[str]) -> list[str]:
    """Store `tags` (most recent first) as the user's recent tags, the first KEPT of them."""
    kept = list(dict.fromkeys(tags))[:KEPT]
    with current_services().db.session() as session:
        user_settings.write_setting(session, username, SETTING_KEY, {"tags": kept})
    return kept
