"""`python main.py` / `vireo`: serve (the default), rebuild the index from the PACS files, or install OHIF."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib.metadata import PackageNotFoundError, version

from app.settings import Settings, add_arguments, load_settings


def vireo_version() -> str:
    try:
        return version("vireo")
    except PackageNotFoundError:
        return "0.1.0"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vireo",
        description="Vireo: a local PACS, datasets browser and workflow engine in one process. "
        "Every option can also be set as the VIREO_* environment variable shown.",
    )
    p.add_argument("--version", action="version", version=f"vireo {vireo_version()}")
    p.add_argument("command", nargs="?", default="serve", choices=["serve", "reindex"],
                   help="serve: run the web UI, API and DICOM receiver (default); reindex: rebuild the index from the PACS files; "
                   "`vireo ohif install|status`: add Vireo's own OHIF Viewer (see `vireo ohif --help`)")
    add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> None:
    if argv is None:
        # Under NiceGUI's test `user` fixture this file runs inside pytest: its arguments are not ours.
        argv = [] if os.environ.get("NICEGUI_USER_SIMULATION") else sys.argv[1:]
    if argv[:1] == ["ohif"]:  # `vireo ohif install|status`: its own small parser, no web stack
        from app.ohif.cli import main as ohif_main

        raise SystemExit(ohif_main(argv[1:]))
    options = parser().parse_args(argv)
    settings = load_settings(options)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    for chatty in ("apscheduler", "httpx", "highdicom"):  # a line per federation poll would drown the log
        logging.getLogger(chatty).setLevel(logging.WARNING)
    if options.command == "reindex":
        raise SystemExit(reindex(settings))
    from app.server import serve

    serve(settings)


def reindex(settings: Settings) -> int:
    """Rebuild the index from `pacs/`; prints what could not be read. Exit status 1 if anything could not."""
    from app.services import build_services
    from ingest.reindex import reindex as rebuild

    services = build_services(settings)
    services.db.migrate()
    report = rebuild(services.store, services.indexer)
    print(f"reindexed {report.indexed} of {report.files} files; removed {report.removed_rows} rows whose files are gone")
    for path, reason in report.unreadable:
        print(f"could not read {path}: {reason}")
    services.db.dispose()
    return 1 if report.unreadable else 0
