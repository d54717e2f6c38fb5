"""The display colour of each segment of a SEG Vireo writes (RecommendedDisplayCIELabValue, PS3.3 C.8.20.2).

Without it every viewer picks its own colours (OHIF, Slicer and others differ, and some draw
every segment alike), so the same structure looks different from one screen to the next. A
fixed palette by segment number makes the colours stable (segment 1 is the same red in every
SEG Vireo writes) and distinct from one another within a SEG: twelve well-separated hues
(Sasha Trubetskoy's "distinct colours"), then the cycle repeats.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from highdicom.color import CIELabColor

PALETTE_RGB: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),    # red
    (60, 180, 75),    # green
    (255, 225, 25),   # yellow
    (0, 130, 200),    # blue
    (245, 130, 48),   # orange
    (145, 30, 180),   # purple
    (70, 240, 240),   # cyan
    (240, 50, 230),   # magenta
    (210, 245, 60),   # lime
    (250, 190, 212),  # pink
    (0, 128, 128),    # teal
    (170, 110, 40),   # brown
)


def segment_rgb(segment_number: int) -> tuple[int, int, int]:
    """The sRGB colour of a segment, by its 1-based number."""
    return PALETTE_RGB[(segment_number - 1) % len(PALETTE_RGB)]


def segment_colour(segment_number: int) -> CIELabColor:
    """The colour to pass as highdicom's `SegmentDescription(display_color=…)` (highdicom loads only when a SEG is written)."""
    from highdicom.color import CIELabColor

    return CIELabColor.from_rgb(*segment_rgb(segment_number))
