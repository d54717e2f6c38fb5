"""How a DICOM person name (PN) is shown to people: every group of it, in one readable line.

A PN value holds up to three component groups separated by `=` (PS3.5 6.2): alphabetic,
ideographic and phonetic, e.g. `Yamada^Tarou=山田^太郎=やまだ^たろう`. Showing only the first
group hides the name a Japanese, Chinese or Korean reader knows the patient by, so the
ideographic group follows in parentheses, as OHIF shows it: `Yamada, Tarou (山田 太郎)`.
The phonetic group is a reading of the ideographic one; it is shown only when there is no
ideographic group to read. Matching names is another matter (`core.person_names`); this
module only draws them.
"""

from __future__ import annotations

from pydicom.valuerep import PersonName


def _components(group: str) -> list[str]:
    """A group's non-empty components in DICOM order: family, given, middle, prefix, suffix."""
    name = PersonName(group)
    parts = (name.family_name, name.given_name, name.middle_name, name.name_prefix, name.name_suffix)
    return [part.strip() for part in parts]


def _alphabetic(group: str) -> str:
    """`Family^Given^Middle^Prefix^Suffix` as Western readers write it: `Family, Prefix Given Middle Suffix`."""
    family, given, middle, prefix, suffix = _components(group)
    rest = " ".join(part for part in (prefix, given, middle, suffix) if part)
    return f"{family}, {rest}" if family and rest else family or rest


def _ideographic(group: str) -> str:
    """An ideographic or phonetic group as East Asian readers write it: family name first, a space between, no comma."""
    family, given, middle, prefix, suffix = _components(group)
    return " ".join(part for part in (prefix, family, given, middle, suffix) if part)


def person_name(value: str | None) -> str:
    """A PN value as people write it, every group kept: `Yamada^Tarou=山田^太郎` → `Yamada, Tarou (山田 太郎)`.

    In a PN `=` separates groups (PS3.5 6.2), so `YAMADA=山田` is shown as `YAMADA (山田)`
    too. Without any `^`, a value is taken for groups only when what follows its first `=` is
    written in another script, as ideographic and phonetic groups are; anything else without
    components is likely no structured name at all and is shown exactly as sent.
    """
    text = (value or "").strip()
    if "^" not in text and not any(ord(c) > 127 for c in text.partition("=")[2]):
        return text
    groups = [*text.split("=", 2), "", ""][:3]
    alphabetic = _alphabetic(groups[0])
    other = _ideographic(groups[1]) or _ideographic(groups[2])
    if alphabetic and other:
        return f"{alphabetic} ({other})"
    return alphabetic or other
