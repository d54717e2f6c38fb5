"""Exception text fit for a client: what a decoder or parser said, without server paths or tracebacks.

pydicom's "With tag … got exception" errors embed a whole traceback (with the paths of
installed packages), and some decoders quote the file they read. Answers over HTTP and DICOM
carry the reason, never those.
"""

from __future__ import annotations

import re

# Two or more /segments in a row: a file system path (a media type such as image/jpeg has one).
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[/\\][\w.@+~-]+){2,}[/\\]?")
MAX_REASON = 300


def plain_reason(exc: BaseException) -> str:
    """The first lines of `exc`'s message (up to a traceback), paths replaced by '…', at most MAX_REASON characters."""
    lines: list[str] = []
    for line in str(exc).splitlines():
        if line.strip().startswith("Traceback"):
            break
        if line.strip():
            lines.append(line.strip())
    text = _PATH.sub("…", " ".join(lines[:3])) or type(exc).__name__
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"
