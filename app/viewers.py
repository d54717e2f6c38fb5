"""Which image viewer opens a series, and the links into OHIF Viewer v3 (Vireo's own under /ohif, or VIREO_OHIF_URL's)."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote, urlencode

from sqlalchemy import select

from app.ohif import location
from app.runtime import current_services
from core import user_settings
from core.models import Series


def ohif_study_url(ohif_url: str, study_uid: str) -> str | None:
    """'Open in OHIF' for `study_uid`: Vireo's own /ohif when installed, else `VIREO_OHIF_URL`'s, else None.

    The own one wins: same origin with the session cookie is the only way OHIF v3 reaches a
    login-protected /dicomweb reliably (it ignores `requestOptions.auth` cross-origin).
    """
    if not study_uid:
        return None
    if location.installed() is not None:
        return own_ohif_url(study_uid)
    if not ohif_url:
        return None
    return f"{ohif_url.rstrip('/')}/viewer?StudyInstanceUIDs={quote(study_uid, safe='.')}"


VIEWER_CHOICES = user_settings.VIEWER_CHOICES  # the quick slice viewer (default) or OHIF
OWN_OHIF_PREFIX = "/ohif"
SEG_HANGING_PROTOCOL = "@ohif/seg"  # OHIF's protocol that draws a SEG over the series it references


def own_ohif_url(study_uid: str, series_uid: str | None = None, *, segmentation: bool = False,
                 seg_series_uids: list[str] | None = None) -> str:
    """The path of Vireo's own OHIF (served under /ohif) on a study, a series, or in segmentation mode.

    With `seg_series_uids` the SEG series are loaded with the series and OHIF's SEG hanging
    protocol shows the (first) SEG over it; `series_uid` must then be the referenced series.
    """
    mode = "segmentation" if segmentation else "viewer"
    url = f"{OWN_OHIF_PREFIX}/{mode}?StudyInstanceUIDs={quote(study_uid, safe='.')}"
    series = [s for s in [series_uid, *(seg_series_uids or [])] if s]
    if series:
        url += "&SeriesInstanceUIDs=" + ",".join(quote(s, safe=".") for s in series)
    if seg_series_uids and not segmentation:
        url += "&hangingProtocolId=" + quote(SEG_HANGING_PROTOCOL, safe="")
    return url


def preferred_viewer(username: str) -> str:
    """The viewer a user's detail panel opens first: 'quick' (the default) or 'ohif'.

    The stored choice, whether or not OHIF is installed right now: the panel shows how to
    install it rather than silently switching the user's choice.
    """
    with current_services().db.session() as session:
        return user_settings.read_viewer_choice(session, username)


def set_preferred_viewer(username: str, choice: str) -> None:
    """Store a user's viewer choice; raises ValueError for anything but 'quick' or 'ohif'."""
    if choice not in VIEWER_CHOICES:
        raise ValueError(f"the viewer is 'quick' or 'ohif', not {choice!r}")
    with current_services().db.session() as session:
        user_settings.write_viewer_choice(session, username, choice)


# --- "Open in OHIF" links on cards, study headers and job results ---------------------------

_OWN_CHECK_SECONDS = 10.0  # installing OHIF needs a restart anyway; don't stat its marker for every card
_own_checked: tuple[float, bool] = (float("-inf"), False)


def own_ohif_installed() -> bool:
    """Whether Vireo's own OHIF is served under /ohif (checked at most every few seconds: a page lists many cards)."""
    global _own_checked
    now = time.monotonic()
    if now - _own_checked[0] > _OWN_CHECK_SECONDS:
        _own_checked = (now, location.installed() is not None)
    return _own_checked[1]


def external_ohif_url() -> str:
    """VIREO_OHIF_URL of the running Vireo ("" when unset, or when no Vireo runs: card data built in a test)."""
    try:
        return current_services().settings.ohif_url
    except RuntimeError:
        return ""


def series_ohif_url(study_uid: str, series_uid: str, *, modality: str = "", referenced_series_uid: str | None = None,
                    external_url: str | None = None) -> str | None:
    """'Open in OHIF' for one series: a SEG is opened over the image series it annotates.

    Vireo's own OHIF when installed, else the viewer `external_url` (VIREO_OHIF_URL; read from
    the settings when None) names, else None (the link is hidden). UIDs are percent-encoded:
    they come from untrusted metadata.
    """
    if not study_uid or not series_uid:
        return None
    seg_over = modality == "SEG" and bool(referenced_series_uid)
    if own_ohif_installed():
        if seg_over:
            return own_ohif_url(study_uid, referenced_series_uid, seg_series_uids=[series_uid])
        return own_ohif_url(study_uid, series_uid)
    base = external_ohif_url() if external_url is None else external_url
    if not base:
        return None
    series = [referenced_series_uid, series_uid] if seg_over else [series_uid]
    return (f"{base.rstrip('/')}/viewer?" +
            urlencode({"StudyInstanceUIDs": study_uid, "SeriesInstanceUIDs": ",".join(s for s in series if s)}, safe=".,"))


def card_links(doc: dict[str, Any]) -> dict[str, str | None]:
    """The OHIF links a gallery card carries: its series (`series`) and its study (`study`, for the study header)."""
    external = external_ohif_url()
    study_uid = str(doc.get("StudyInstanceUID") or "")
    series = series_ohif_url(study_uid, str(doc.get("SeriesInstanceUID") or ""), modality=str(doc.get("Modality") or ""),
                             referenced_series_uid=doc.get("referenced_series"), external_url=external)
    study = (own_ohif_url(study_uid) if own_ohif_installed() else ohif_study_url(external, study_uid)) if study_uid else None
    return {"series": series, "study": study}


def job_result_links(series_uids: list[str], limit: int = 20) -> list[dict[str, str]]:
    """'Open in OHIF' for a job's series and the results (SEGs) derived from them: label and URL of each.

    Jobs do not record which series they wrote; their results reference the input series
    (ReferencedSeriesSequence), so each input series is opened with its SEGs drawn over it.
    """
    if not series_uids or not (own_ohif_installed() or external_ohif_url()):
        return []
    wanted = list(dict.fromkeys(series_uids))[:limit]
    with current_services().db.engine.connect() as conn:
        rows = conn.execute(select(Series.series_uid, Series.study_uid, Series.modality, Series.series_description,
                                   Series.referenced_series_uid).where(Series.series_uid.in_(wanted))).all()  # type: ignore[attr-defined]
        segs = conn.execute(select(Series.referenced_series_uid, Series.series_uid)
                            .where(Series.referenced_series_uid.in_(wanted), Series.modality == "SEG")  # type: ignore[union-attr]
                            .order_by(Series.series_number, Series.series_uid)).all()  # type: ignore[arg-type]
    seg_map: dict[str, list[str]] = {}
    for source, seg in segs:
        seg_map.setdefault(source, []).append(seg)
    links = []
    for row in sorted(rows, key=lambda r: wanted.index(r.series_uid)):
        found = seg_map.get(row.series_uid, [])
        if own_ohif_installed():
            url = own_ohif_url(row.study_uid, row.series_uid, seg_series_uids=found or None)
        else:
            url = series_ohif_url(row.study_uid, row.series_uid, modality=row.modality or "", referenced_series_uid=row.referenced_series_uid)
        if url is None:
            continue
        what = " · ".join(p for p in (row.modality, row.series_description) if p) or "series"
        links.append({"label": f"{what}" + (f" with {len(found)} segmentation{'s' * (len(found) > 1)}" if found else ""),
                      "url": url, "series_uid": row.series_uid})
    return links
