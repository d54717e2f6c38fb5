"""Tag colours: the same tag has the same colour on every card, in the tag row and in every tab.

A tag's colour comes from a hash of its name into a fixed palette of well-separated hues, so it
needs no stored state and survives reloads; gallery.js runs the same hash (`tagColour`) on the
same palette (sent as a prop), so both sides agree without a round trip. Each entry pairs a
background with the text colour that reads on it (WCAG contrast ≥ 4.5 for 11 px chip text).
"""

from __future__ import annotations

from typing import NamedTuple


class TagColour(NamedTuple):
    background: str
    text: str


# 16 hues roughly 22° apart, alternating light and dark so neighbours in hue differ in lightness too.
PALETTE: tuple[TagColour, ...] = (
    TagColour("#ffd6d6", "#5c0000"),  # rose
    TagColour("#b3261e", "#ffffff"),  # red
    TagColour("#ffe0b2", "#5a2d00"),  # apricot
    TagColour("#a04a00", "#ffffff"),  # rust
    TagColour("#fff3a8", "#4a3f00"),  # lemon
    TagColour("#6b6400", "#ffffff"),  # olive
    TagColour("#d4f5c4", "#1d4d0b"),  # mint
    TagColour("#2e7d32", "#ffffff"),  # green
    TagColour("#c8f2ec", "#00473e"),  # aqua
    TagColour("#00796b", "#ffffff"),  # teal
    TagColour("#cfe8ff", "#003a6b"),  # sky
    TagColour("#1565c0", "#ffffff"),  # blue
    TagColour("#dcd6ff", "#2a1f6b"),  # lavender
    TagColour("#5e35b1", "#ffffff"),  # violet
    TagColour("#f7d4f0", "#5c0a4c"),  # pink
    TagColour("#ad1457", "#ffffff"),  # magenta
)


def palette_index(tag: str) -> int:
    """FNV-1a (32 bit) over the tag's UTF-16 code units: what JavaScript's charCodeAt sees."""
    data = tag.encode("utf-16-le")
    value = 0x811C9DC5
    for i in range(0, len(data), 2):
        value ^= data[i] | (data[i + 1] << 8)
        value = (value * 0x01000193) & 0xFFFFFFFF
    return value % len(PALETTE)


def tag_colour(tag: str) -> TagColour:
    return PALETTE[palette_index(tag)]


def palette_prop() -> list[list[str]]:
    """The palette as gallery.js receives it: [[background, text], …]."""
    return [[c.background, c.text] for c in PALETTE]
