"""The Datasets page's per-user configuration: view, card layout, sort and what each field is shown in.

Defaults are Kaapana's (`defaultUIConfig.ts`): the series card shows Series Description, Patient
Name, Patient Sex, Study Description and Study Date; the dashboard charts Modality, Tags and
Manufacturer; newest arrivals first. They are stored per account on the server
(core.user_settings), not in the browser.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from app.runtime import current_services
from core import user_settings

SETTING_KEY = "datasets"
MAX_FIELDS = 60
PANEL_WIDTH = 560  # beside three columns of cards at 1280 px
MIN_PANEL_WIDTH = 320
MAX_PANEL_WIDTH = 3000


class FieldDisplay(BaseModel):
    """Where one attribute appears: Series Card, Dashboard, Patient View, Study View, and whether the card truncates it."""

    field: str = Field(min_length=1, max_length=128)
    series_card: bool = False
    truncate: bool = False
    dashboard: bool = False
    patient_view: bool = False
    study_view: bool = False


class GallerySettings(BaseModel):
    view: Literal["gallery", "structured"] = "gallery"
    items_per_row: int = Field(0, ge=0, le=12, description="0: as many as fit")
    card_text: bool = Field(True, description="cards with metadata; False: thumbnails only")
    sort: str = Field("-arrived", max_length=140)
    fields: list[FieldDisplay] = Field(default_factory=lambda: default_fields(), max_length=MAX_FIELDS)
    tag_bar: list[str] = Field(default_factory=list, max_length=50, description="the tag row's tags (keys 1–9 toggle the first nine)")
    multiple_tags: bool = Field(False, description="several tags active at once")
    panel_width: int = Field(PANEL_WIDTH, ge=MIN_PANEL_WIDTH, le=MAX_PANEL_WIDTH, description="the detail panel's width in CSS pixels, as last dragged")

    @field_validator("fields")
    @classmethod
    def _unique(cls, fields: list[FieldDisplay]) -> list[FieldDisplay]:
        seen: dict[str, FieldDisplay] = {}
        for item in fields:
            seen.setdefault(item.field, item)
        return list(seen.values())

    def names(self, flag: str) -> list[str]:
        return [f.field for f in self.fields if getattr(f, flag)]


def default_fields() -> list[FieldDisplay]:
    return [
        FieldDisplay(field="SeriesDescription", series_card=True, truncate=True),
        FieldDisplay(field="PatientID"),
        FieldDisplay(field="PatientName", series_card=True, patient_view=True),
        FieldDisplay(field="PatientBirthDate", patient_view=True),
        FieldDisplay(field="PatientSex", series_card=True, patient_view=True),
        FieldDisplay(field="StudyDescription", series_card=True),
        FieldDisplay(field="StudyDate", series_card=True, study_view=True),
        FieldDisplay(field="Modality", dashboard=True, patient_view=True, study_view=True),
        FieldDisplay(field="tags", dashboard=True),
        FieldDisplay(field="Manufacturer", dashboard=True),
    ]


def load(username: str) -> GallerySettings:
    """The user's settings; defaults where nothing (or something no longer valid) is stored."""
    with current_services().db.session() as session:
        stored = user_settings.read_setting(session, username, SETTING_KEY)
    if stored is None:
        return GallerySettings()
    try:
        return GallerySettings.model_validate(stored)
    except ValidationError:
        return GallerySettings()


def save(username: str, settings: GallerySettings | dict[str, Any]) -> GallerySettings:
    """Validate and store; raises pydantic.ValidationError on bad input."""
    checked = settings if isinstance(settings, GallerySettings) else GallerySettings.model_validate(settings)
    with current_services().db.session() as session:
        user_settings.write_setting(session, username, SETTING_KEY, checked.model_dump())
    return checked


def update(username: str, **changes: Any) -> GallerySettings:
    """Change some settings, keeping the rest as stored (another page may have saved them meanwhile)."""
    return save(username, load(username).model_copy(update=changes))


def reset(username: str) -> GallerySettings:
    with current_services().db.session() as session:
        user_settings.clear_setting(session, username, SETTING_KEY)
    return GallerySettings()
