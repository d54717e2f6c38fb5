"""Links into image viewers that read Vireo's /dicomweb (OHIF Viewer v3 today)."""

from __future__ import annotations

from urllib.parse import quote


def ohif_study_url(ohif_url: str, study_uid: str) -> str | None:
    """The OHIF viewer URL showing `study_uid`, or None when no OHIF is configured (`VIREO_OHIF_URL`)."""
    if not ohif_url or not study_uid:
        return None
    return f"{ohif_url.rstrip('/')}/viewer?StudyInstanceUIDs={quote(study_uid, safe='.')}"
