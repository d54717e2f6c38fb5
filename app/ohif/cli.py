"""`vireo ohif install [--from TARBALL] [--dir DIR] [--force]` and `vireo ohif status`.

Also `python -m app.ohif install`, which scripts/setup.sh runs at every set-up: it returns
at once when the pinned version is installed already.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.ohif import location


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vireo ohif", description="Vireo's own OHIF Viewer, served under /ohif.")
    commands = p.add_subparsers(dest="action", required=True)
    install = commands.add_parser("install", help=f"get {location.OHIF_PACKAGE}@{location.OHIF_VERSION} with npm (or from a tarball) and prepare it")
    install.add_argument("--from", dest="tarball", type=Path, help="an ohif-app-<version>.tgz made by `npm pack` elsewhere (offline sites)")
    install.add_argument("--dir", type=Path, help=f"folder holding OHIF versions (default: ${location.ENV_DIR}, else .vireo/ohif in a checkout)")
    install.add_argument("--force", action="store_true", help="install again even when it is there")
    status = commands.add_parser("status", help="say whether and where OHIF is installed")
    status.add_argument("--dir", type=Path)
    return p


def main(argv: list[str] | None = None) -> int:
    options = parser().parse_args(argv)
    root = location.ohif_root(options.dir) if options.dir else None
    if options.action == "status":
        dist = location.installed(root)
        print(f"OHIF {location.OHIF_VERSION} is installed in {dist}" if dist else location.INSTALL_HINT)
        return 0 if dist else 1
    from app.ohif.install import InstallError, install

    try:
        report = install(options.tarball, root, force=options.force)
    except InstallError as exc:
        print(f"vireo ohif install: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0
