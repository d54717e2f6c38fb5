"""Text analysis shared by every search backend: one definition of what a word is.

Values are folded (Unicode NFKD, diacritics dropped, case-folded) and split into words at
anything that is not a letter or digit, in Python, once — so SQLite, PostgreSQL and the
reference evaluator all agree that `LUNG1-0042` is the words `lung1 0042` and that
`Müller` matches `muller`. Each distinct value is indexed on its own (the value dictionary),
so wildcards (`LUNG1-*`) match whole values and phrases never run from one value into the next.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_dict

_WORD = re.compile(r"[^\W_]+")
MAX_VALUE = 256  # longer values are indexed by their first characters (the dictionary column holds 256)

# Fields that are not DICOM attributes but are searchable by name.
LABEL_FIELDS = ("tags", "datasets")
FIELD_ALIASES = {"tag": "tags", "dataset": "datasets"}
# Series-level numbers kept beside the attributes (sortable, range-searchable).
COUNTER_FIELDS = ("instances",)


@lru_cache(maxsize=65536)
def fold(text: str) -> str:
    """Case- and accent-insensitive form of `text`: what matching compares."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def words(text: str) -> list[str]:
    """The words of `text`, folded: maximal runs of letters and digits."""
    return _WORD.findall(fold(text))


def folded_words(folded: str) -> list[str]:
    """The words of an already folded text."""
    return _WORD.findall(folded)


def as_strings(value: Any) -> list[str]:
    """The values of a document attribute as text (lists give one entry per item)."""
    if isinstance(value, str):
        text = value.strip()
        return [text[:MAX_VALUE]] if text else []
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [s for item in value for s in as_strings(item)]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return [text[:MAX_VALUE]] if text else []


# Identifiers unique to a series or study: searchable by exact value and prefix, never counted or listed.
IDENTIFIERS = frozenset({
    "SeriesInstanceUID", "StudyInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID", "MediaStorageSOPInstanceUID",
    "IrradiationEventUID", "SynchronizationFrameOfReferenceUID", "ConcatenationUID", "DimensionOrganizationUID",
    "ReferencedSOPInstanceUID", "StorageMediaFileSetUID", "TargetFrameOfReferenceUID",
})


@lru_cache(maxsize=4096)
def vr_of(field: str) -> str | None:
    """The DICOM value representation of a keyword, or None for names DICOM does not define."""
    if field not in keyword_dict:
        return None
    try:
        return dictionary_VR(keyword_dict[field])
    except KeyError:
        return None


def is_identifier(field: str | None) -> bool:
    """Per-series UIDs: kept out of the value dictionary (a million values nobody wants to count)."""
    return field in IDENTIFIERS


_LOWER_KEYWORDS: dict[str, str] = {}


def canonical_field(name: str) -> str | None:
    """A field name as the index spells it (DICOM keywords are case-insensitive in queries), or None."""
    lowered = name.strip().lower()
    if lowered in FIELD_ALIASES:
        return FIELD_ALIASES[lowered]
    if lowered in LABEL_FIELDS or lowered in COUNTER_FIELDS:
        return lowered
    if not _LOWER_KEYWORDS:
        _LOWER_KEYWORDS.update({kw.lower(): kw for kw in keyword_dict})
    return _LOWER_KEYWORDS.get(lowered)


def suggestion(name: str) -> str:
    """' (did you mean X?)' for a misspelt field name, or ''."""
    import difflib

    if not _LOWER_KEYWORDS:
        canonical_field("PatientID")
    close = difflib.get_close_matches(name.lower(), list(_LOWER_KEYWORDS) + list(LABEL_FIELDS), n=1, cutoff=0.75)
    if not close:
        return ""
    return f" (did you mean {_LOWER_KEYWORDS.get(close[0], close[0])}?)"
