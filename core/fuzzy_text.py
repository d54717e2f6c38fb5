"""Fuzzy matching of text attributes (QIDO-RS `fuzzymatching=true`): case- and accent-insensitive, wildcards too.

PS3.4 C.2.2.2.4 leaves fuzzy matching to the implementation; PS3.18 10.6.1.2.1 lets a client ask
for it. Viewers do (OHIF's `supportsFuzzyMatching`): a user typing "brain" in a Description
filter expects "BRAIN", "Brain" and "Bräin". Without it matching stays exact and
case-sensitive, as PS3.4 has it.

Text attributes such as descriptions have no folded copy in the index (person names do:
core.person_names), and SQLite's lower() knows only ASCII. So the database compares the stored
text with a regular expression in which every letter of the folded query is a class of all the
characters that fold to it (`a` → `[aAàÀáÁâÂ…]`): the same expression runs as Python's `re` on
SQLite (SQLAlchemy registers REGEXP) and as `~` on PostgreSQL, with no extension or function to
install. Python code matching documents folds both sides instead (`text_matches`).
"""

from __future__ import annotations

import fnmatch
import re
import unicodedata
from functools import lru_cache

from core.search.analysis import fold

# The attributes matched fuzzily: free texts, descriptions and IDs (SH, LO, …). Codes (CS), UIDs,
# dates and numbers keep their exact rules; person names fold through core.person_names.
FUZZY_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC"})
# Blocks whose characters fold to one letter or digit: Latin, Greek, Cyrillic and the fullwidth forms.
_FOLDED_BLOCKS = ((0x20, 0x250), (0x370, 0x530), (0x1E00, 0x2000), (0xFF01, 0xFF5F))


@lru_cache(maxsize=1)
def _variants() -> dict[str, str]:
    """folded letter or digit → every character (in those blocks) that folds to it, itself first."""
    found: dict[str, list[str]] = {}
    for low, high in _FOLDED_BLOCKS:
        for code in range(low, high):
            char = chr(code)
            if unicodedata.category(char).startswith("C"):
                continue
            folded = fold(char)
            if len(folded) == 1 and folded.isalnum():
                found.setdefault(folded, [folded])
                if char not in found[folded]:
                    found[folded].append(char)
    return {key: "".join(chars) for key, chars in found.items()}


@lru_cache(maxsize=4096)
def fuzzy_regex(value: str) -> str:
    """An anchored regex matching every text that folds to what `value` folds to (`*` any run, `?` one character)."""
    variants = _variants()
    out = ["(?s)^"]  # `.` also crosses line breaks of LT/UT: DOTALL in Python, the default (and the same flag) in PostgreSQL
    for char in fold(value):
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char in variants and len(variants[char]) > 1:
            out.append(f"[{variants[char]}]")
        else:
            out.append(re.escape(char))
    out.append("$")
    return "".join(out)


def text_matches(text: str, wanted: str) -> bool:
    """The Python side of the same rule, for values only the instance documents hold."""
    folded = fold(wanted)
    return fnmatch.fnmatchcase(fold(text), folded.replace("[", "[[]")) if "*" in folded or "?" in folded else fold(text) == folded
