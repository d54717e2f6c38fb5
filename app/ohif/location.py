"""Where Vireo's OHIF lives on disk, and whether a complete install is there.

The prebuilt OHIF dist is ~70 MB even without its AI runtime: too big for the wheel, so it is
installed beside it, into `$VIREO_OHIF_DIR/<version>/`. Without VIREO_OHIF_DIR that is
`.vireo/ohif/` in a source checkout (gitignored), or `~/.local/share/vireo/ohif/` for an
installed wheel. A folder counts as installed only once its marker file is written, which the
installer does last, so a half-finished install is never served.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

OHIF_PACKAGE = "@ohif/app"
OHIF_VERSION = "3.13.2"
# The registry's dist.integrity of @ohif/app@3.13.2 (`npm view @ohif/app@3.13.2 dist.integrity`):
# pinned, so a tarball given with --from on an offline site is checked just like a downloaded one.
OHIF_INTEGRITY = "sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA=="
MARKER = ".vireo-ohif.json"
ENV_DIR = "VIREO_OHIF_DIR"

INSTALL_HINT = (
    "OHIF Viewer is not installed. To add it, run `vireo ohif install` "
    "(or `vireo ohif install --from ohif-app-3.13.2.tgz` without internet), then restart Vireo."
)


def _checkout_root() -> Path | None:
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and os.access(root, os.W_OK) else None


def ohif_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding OHIF versions: the argument, $VIREO_OHIF_DIR, the checkout's .vireo/ohif, or ~/.local/share."""
    chosen = explicit or os.environ.get(ENV_DIR, "").strip()
    if chosen:
        return Path(chosen).expanduser().resolve()
    checkout = _checkout_root()
    if checkout is not None:
        return checkout / ".vireo" / "ohif"
    data_home = Path(os.environ.get("XDG_DATA_HOME", "").strip() or Path.home() / ".local" / "share")
    return data_home / "vireo" / "ohif"


def dist_dir(root: Path | None = None) -> Path:
    """The served folder of the pinned version (whether or not it is installed yet)."""
    return (root or ohif_root()) / OHIF_VERSION


def read_marker(dist: Path) -> dict[str, object] | None:
    try:
        marker = json.loads((dist / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("version") == OHIF_VERSION else None


def installed(root: Path | None = None) -> Path | None:
    """The dist folder to serve, or None when the pinned OHIF is not (completely) installed."""
    dist = dist_dir(root)
    return dist if read_marker(dist) is not None and (dist / "index.html").is_file() else None
