"""Which image viewer opens a series, and the links into OHIF Viewer v3 (Vireo's own under /ohif, or VIREO_OHIF_URL's)."""

from __future__ import annotations

from urllib.parse import quote

from app.ohif import location
from app.runtime import current_services
from core import user_settings


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
