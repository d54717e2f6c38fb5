"""Series documents → the gallery's card data (what each card, patient and study header shows)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import quote

from pydicom.datadict import dictionary_VR, tag_for_keyword

from app.gallery_settings import GallerySettings
from app.viewers import card_links
from components.gallery import field_label
from core.name_display import person_name

__all__ = ["card", "display", "person_name", "thumbnail_url"]


@lru_cache(maxsize=512)
def _is_person_name(field: str) -> bool:
    """Whether a card field is a DICOM keyword of VR PN (PatientName, OperatorsName, ReferringPhysicianName, ...)."""
    tag = tag_for_keyword(field)
    return tag is not None and dictionary_VR(tag) == "PN"


def display(doc: dict[str, Any], field: str) -> str:
    """A document's value as a card shows it: person names with all their groups, dates as YYYY-MM-DD."""
    value = doc.get(field)
    if value is None or value == "":
        return ""
    if _is_person_name(field):
        return "; ".join(person_name(str(v)) for v in (value if isinstance(value, list) else [value]))
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if field.endswith("Date") and isinstance(value, str) and len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return str(value)


def thumbnail_url(doc: dict[str, Any]) -> str:
    version = doc.get("thumbnail_version") or ""
    return f"/api/series/{quote(doc['SeriesInstanceUID'], safe='')}/thumbnail?v={quote(str(version), safe='')}"


def card(doc: dict[str, Any], settings: GallerySettings) -> dict[str, Any]:
    shown = {f.field for f in settings.fields if f.series_card}
    patient_fields = settings.names("patient_view")
    study_fields = settings.names("study_view")
    ohif = card_links(doc)  # "Open in OHIF" for the card and its study header (None: hidden)
    return {
        "uid": doc["SeriesInstanceUID"],
        "ohif": ohif["series"],
        "thumb": thumbnail_url(doc),
        "modality": doc.get("Modality") or "?",
        "complete": bool(doc.get("is_complete", True)),
        "tags": list(doc.get("tags") or []),
        "fields": {f: display(doc, f) for f in shown},
        "patient": {
            "key": f"{doc.get('PatientID', '')}\x00{doc.get('PatientName', '')}",
            "fields": [{"field": f, "label": field_label(f), "value": display(doc, f)} for f in patient_fields],
        },
        "study": {
            "key": doc.get("StudyInstanceUID", ""),
            "ohif": ohif["study"],
            "fields": [{"field": f, "label": field_label(f), "value": display(doc, f)} for f in study_fields],
        },
    }
