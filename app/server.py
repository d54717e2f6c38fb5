"""Wires Vireo into NiceGUI's app: middleware, routers, pages, and the services' life cycle."""

from __future__ import annotations

import gc
import logging
import os

from nicegui import app, ui
from nicegui.storage import Storage

from app.api import accounts as accounts_api
from app.api import datasets as datasets_api
from app.api import dags as dags_api
from app.api import dicomweb, downloads, health, jobs, search, series, tags, user_settings, viewer, wado_rs
from app.api import federation as federation_api
from app.api import instances as instances_api
from app.api import uploads as uploads_api
from app.api import workflows as workflows_api
from app.auth import AuthMiddleware
from app.body_limits import BodyLimitMiddleware, BodyLimitTable
from app.cli import vireo_version
from app.compression import gzip_middleware
from app.cors import DicomwebCors
from app import open_tabs, proxies
from app.runtime import set_services
from app.demo.seeding import DemoSeeder
from app.ohif import serve as ohif
from app.ohif.challenge import NoChallengeForScripts
from app.services import Services, build_services, storage_secret
from app.settings import Settings
from ingest import import_limits
from pages import data_upload, datasets, instances, login, settings, workflow_execution, workflow_list

log = logging.getLogger(__name__)


def build_app(settings_: Settings) -> Services:
    """Register everything on NiceGUI's app; the services start with the server."""
    services = build_services(settings_)
    set_services(services)
    # Login sessions persist with the rest of Vireo's state, not in the working directory.
    Storage.path = (settings_.data_dir / "sessions").resolve()
    app.add_middleware(AuthMiddleware)
    app.add_middleware(NoChallengeForScripts)  # around it: OHIF's requests get a 401 it can report, not a browser password dialog
    open_tabs.install()  # an open tab is checked on every UI event, not only at page load
    # Added after authentication, so it runs first: a body over its route's limit is refused before anything reads it.
    app.add_middleware(BodyLimitMiddleware, table=BodyLimitTable.sized(settings_.max_request_bytes, settings_.max_upload_request_bytes, settings_.max_stow_request_bytes))
    # Job processes start later and inherit these: how far an import may unpack, whichever way they were configured.
    os.environ.update(import_limits.as_environment(settings_.import_max_unpacked_bytes, settings_.nifti_max_voxels))
    if settings_.cors_origin_list:
        app.add_middleware(DicomwebCors, origins=settings_.cors_origin_list)  # added last: runs before authentication
    for router in (health.router, viewer.router, series.router, search.router, tags.router, datasets_api.router, accounts_api.router, user_settings.router, downloads.router, dicomweb.router, wado_rs.router, dags_api.router, workflows_api.router, jobs.router, uploads_api.router, instances_api.router, instances_api.audit_router, federation_api.router):
        app.include_router(router)
    app.include_router(ohif.router)  # /ohif/…: Vireo's own OHIF Viewer, behind the same login
    login.register()
    datasets.register()
    settings.register()
    workflow_execution.register()
    workflow_list.register()
    data_upload.register()
    instances.register()
    app.on_startup(services.start)
    if settings_.demo:  # after start-up: the demo comes in through the running receiver and engine
        services.demo = DemoSeeder(services)
        app.on_startup(services.demo.start)
        app.on_shutdown(services.demo.stop)  # registered before services.stop: the seeder stops first
    app.on_startup(freeze_start_up_heap)
    app.on_shutdown(services.stop)
    return services


def freeze_start_up_heap() -> None:
    """Exempt everything built at start-up from garbage collection.

    NiceGUI, pydicom's dictionaries and SQLAlchemy leave ~170,000 long-lived objects that every
    full collection would scan again (100-250 ms on our machines), at a moment an
    allocation-heavy request (a QIDO page, a metadata answer) happens to trigger it.
    """
    gc.collect()
    gc.freeze()


def serve(settings_: Settings) -> None:
    """Run Vireo until interrupted: web UI, API and DICOM receiver in this one process."""
    build_app(settings_)
    log.info("Vireo on http://%s:%d, DICOM on port %d", settings_.host, settings_.http_port, settings_.dicom_port)
    # The API's schema and docs live under /api, behind the same login as the API itself.
    app.openapi_url, app.docs_url, app.redoc_url = "/api/openapi.json", "/api/docs", None
    ui.run(
        fastapi_docs={"title": "Vireo", "version": vireo_version(), "description": "Local PACS, datasets and workflows. See API.md for the contract."},
        host=settings_.host,
        port=settings_.http_port,
        title="Vireo",
        storage_secret=storage_secret(settings_),
        reload=False,
        show=False,
        favicon="🐦",
        show_welcome_message=False,
        gzip_middleware_factory=gzip_middleware,
        **proxies.uvicorn_options(settings_.trusted_proxies),  # X-Forwarded-* only from VIREO_TRUSTED_PROXIES
        **({"ssl_certfile": settings_.ssl_certfile, "ssl_keyfile": settings_.ssl_keyfile} if settings_.ssl_certfile else {}),
    )
