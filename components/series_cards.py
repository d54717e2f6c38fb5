"""Series documents → the gallery's card data (what each card, patient and study header shows)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from app.gallery_settings import GallerySettings
from components.gallery import field_label


def person_name(value: str) -> str:
    """DICOM's `Family^Given^Middle^Prefix^Suffix` as people write it: `Family, Given Middle`.

    A value without `^` is shown exactly as sent (it may hold `=` that is no component-group separator).
    """
    if "^" not in (value or ""):
        return (value or "").strip()
    parts = [p.strip() for p in (value or "").split("=")[0].split("^")]
    family, given = (parts + ["", ""])[:2]
    rest = " ".join(p for p in [given, *parts[2:3]] if p)
    return f"{family}, {rest}" if family and rest else family or rest


def display(doc: dict[str, Any], field: str) -> str:
    value = doc.get(field)
    if value is None or value == "":
        return ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if field == "PatientName" or field.endswith("PhysicianName") or field == "OperatorsName":
        return person_name(str(value))
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
    return {
        "uid": doc["SeriesInstanceUID"],
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
            "fields": [{"field": f, "label": field_label(f), "value": display(doc, f)} for f in study_fields],
        },
    }
