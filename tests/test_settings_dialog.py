"""The Settings dialog's stored values and the detail panel's table rows, without a server (fast).

The dialog in a browser (Save redraws the gallery without a reload, the viewer choice, fitting at
1280×800 and 1920×1080, opening from another page) is in tests/test_detail_panel.py; through
NiceGUI's simulated user in tests/test_datasets_logic.py.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.gallery_settings import MIN_PANEL_WIDTH, GallerySettings
from components.detail_panel import table_rows


def test_panel_width_is_bounded() -> None:
    with pytest.raises(ValidationError):
        GallerySettings(panel_width=MIN_PANEL_WIDTH - 1)
    assert GallerySettings().panel_width >= MIN_PANEL_WIDTH


def test_attribute_rows_show_the_parent_path_apart() -> None:
    rows = table_rows([
        {"tag": "(5200,9230)", "name": "PerFrameFunctionalGroupsSequence", "vr": "SQ", "value": "2 item(s)"},
        {"tag": "(0008,0100)", "name": "PerFrameFunctionalGroupsSequence[2].DerivationImageSequence[1].CodeValue", "vr": "SH", "value": "x" * 130},
    ])
    assert rows[0]["depth"] == 0 and rows[0]["parent"] == "" and rows[0]["leaf"] == "PerFrameFunctionalGroupsSequence"
    assert rows[1]["depth"] == 2 and rows[1]["leaf"] == "CodeValue"
    assert rows[1]["parent"] == "PerFrameFunctionalGroupsSequence[2] › DerivationImageSequence[1]"  # wraps at the spaces
    assert rows[1]["long"] is True and rows[0]["long"] is False
    assert rows[1]["name"].endswith(".CodeValue")  # the search still matches the whole path
