"""The composition root: builds Vireo's services from its settings, starts and stops them.

Everything long-lived in the process lives on one `Services` object — the database, the
PACS store, the index writer, the DICOM receiver, the thumbnail painter and the event bus —
so routers and pages reach them the same way and tests can start a whole Vireo in-process.
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from app.demo.seeding import DemoSeeder
from app.settings import Settings
from core import accounts, dicom_query
from core.db import Database
from core.events import SERIES_CHANGED, SERIES_DELETED, EventBus
from core.pacs_store import PacsStore
from core.search.indexing import index_series, missing_series, prune_changes
from core.search.service import SeriesSearch
from core.workflows.engine import EngineConfig, WorkflowEngine
from core.workflows.executor import Executor
from core.workflows.registry import DagRegistry
from federation.orchestration import Orchestrator
from federation.poller import PollLimits
from federation.sync import Federation, FederationConfig
from ingest.document_backfill import DocumentBackfill
from ingest.incoming_workflow import IncomingRecorder
from ingest.indexer import IndexWriter
from ingest.query_retrieve import QueryRetrieveSCP
from ingest.receiver import DicomReceiver, ReceiverConfig
from ingest.reindex import recover
from ingest.thumbnail_service import ThumbnailService

log = logging.getLogger(__name__)

RUNNING_MARKER = "vireo.running"
BUILTIN_DAG_MODULES = ["ingest.dags", "ingest.pacs_dags", "ingest.import_dags", "federation.dags", "ingest.analysis.segmentation_dags", "ingest.analysis.nnunet_dags", "ingest.analysis.measurement_dags", "federation.learning_dags"]


@dataclass
class Services:
    settings: Settings
    db: Database
    store: PacsStore
    bus: EventBus
    indexer: IndexWriter
    thumbnails: ThumbnailService
    receiver: DicomReceiver
    search: SeriesSearch
    registry: DagRegistry
    workflows: WorkflowEngine
    incoming: IncomingRecorder
    federation: Federation
    orchestrator: Orchestrator
    documents: DocumentBackfill
    demo: DemoSeeder | None = None  # with --demo: seeds the demo once per data dir, reports progress

    @property
    def running_marker(self) -> Path:
        return self.settings.data_dir / RUNNING_MARKER

    def start(self) -> None:
        """Migrate, recover from an unclean stop, then open the DICOM port."""
        self.db.migrate()
        with self.db.session() as session:
            generated = accounts.ensure_admin(session, self.settings.admin_password)
        if generated:
            print(f"Vireo: created user 'admin' with password: {generated}  (shown once)", flush=True)
        self.indexer.start()
        self._recover_after_unclean_stop()
        self.running_marker.touch()
        # Only now does the writer keep the marker fresh: a recovery cut short must find the same window again.
        self.indexer.heartbeat = self.running_marker
        self.thumbnails.start()
        self.documents.start()
        self.orchestrator.start()  # before the scheduler: it hands queued orchestrator jobs over
        self.workflows.start()
        self.federation.start()
        self.incoming.start()
        self.receiver.start()
        threading.Thread(target=self._prepare_search, name="search-warm-up", daemon=True).start()

    def stop(self) -> None:
        self.receiver.stop()
        self.incoming.stop()
        self.federation.stop()
        self.orchestrator.stop()
        self.workflows.stop()
        self.indexer.stop()
        self.documents.stop()
        self.thumbnails.stop()
        self.running_marker.unlink(missing_ok=True)
        self.db.dispose()

    def _prepare_search(self) -> None:
        """Index series that predate the search index (an upgraded database), then load the columns."""
        try:
            total = 0
            while True:
                with self.db.engine.begin() as conn:
                    missing = missing_series(conn, 2000)
                    if not missing:
                        break
                    index_series(conn, missing)
                total += len(missing)
            if total:
                log.info("search: indexed %d series that had no search document", total)
            with self.db.engine.begin() as conn:
                prune_changes(conn)
            self.search.warm()
        except Exception:  # the first query loads the columns itself; nothing is lost
            log.exception("search warm-up failed")

    def _recover_after_unclean_stop(self) -> None:
        if not self.running_marker.exists():
            self.store.clean_incoming()
            return
        since = self.running_marker.stat().st_mtime - 60
        report = recover(self.store, self.indexer, since)
        log.warning("previous run stopped uncleanly: re-indexed %d files (%d unreadable)", report.indexed, len(report.unreadable))


def build_services(settings: Settings) -> Services:
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.sqlalchemy_url)
    store = PacsStore(data_dir / "pacs")
    bus = EventBus()
    indexer = IndexWriter(db)
    thumbnails = ThumbnailService(db, store, data_dir / "thumbnails", bus, settings.thumbnail_quiet_seconds)
    indexer.add_listener(thumbnails.touch)
    documents = DocumentBackfill(db, store)  # for what receiver workers index without a document
    indexer.add_listener(documents.touch)
    dicom_query.documents_ready = documents.settle  # QIDO-RS and C-FIND read documents only once they are made
    indexer.add_listener(lambda uids: bus.publish(SERIES_CHANGED, series_uids=sorted(uids)))
    # A job deleted series (or rebuilt the index): the writer must not trust its cache of known series.
    bus.subscribe(SERIES_DELETED, lambda _topic, payload: indexer.forget(payload.get("series_uids")))
    receiver = DicomReceiver(
        ReceiverConfig(
            host=settings.dicom_host or settings.host,
            port=settings.dicom_port,
            ae_title=settings.dicom_ae_title,
            max_associations=settings.dicom_max_associations,
            allowed_calling_aets=settings.allowed_calling_aets,
            max_connections_per_peer=settings.dicom_max_connections_per_peer,
            workers=settings.receiver_workers,
        ),
        store,
        indexer,
        QueryRetrieveSCP(db, store, settings.dicom_ae_title, settings.move_destinations),
    )
    registry = load_dags(settings)
    engine = WorkflowEngine(
        db, bus, registry, EngineConfig(data_dir.resolve(), settings.sqlalchemy_url, settings.instance_name), build_executor(settings)
    )
    incoming = IncomingRecorder(engine, bus, settings.thumbnail_quiet_seconds)
    indexer.add_listener(incoming.touch)
    federation = Federation(db, engine, registry, bus, settings.host, settings.http_port, "https" if settings.ssl_certfile else "http",
                            federation_config(settings))
    orchestrator = Orchestrator(db, engine, registry, bus)
    search = SeriesSearch(db)
    engine.search = search  # a workflow started on a search resolves it to series through the same search the pages use
    return Services(settings, db, store, bus, indexer, thumbnails, receiver, search, registry, engine, incoming, federation, orchestrator, documents)


def federation_config(settings: Settings) -> FederationConfig:
    """Where this instance's key lives, the limits on what one remote may take, how much audit log is kept."""
    return FederationConfig(
        data_dir=settings.data_dir.resolve(),
        limits=PollLimits(deadline=settings.federation_deadline, max_response=settings.federation_max_response),
        audit_max_rows=settings.audit_max_rows, audit_max_age=timedelta(days=settings.audit_max_days),
    )


def load_dags(settings: Settings) -> DagRegistry:
    """Built-in DAGs, then the user's DAG files (a broken file is listed with its error, not fatal)."""
    registry = DagRegistry()
    for module in BUILTIN_DAG_MODULES:
        registry.load_module(module)
    registry.load_folder(settings.dags_path)
    return registry


def build_executor(settings: Settings) -> Executor:
    """The local process pool, or the Dask cluster named by `VIREO_DASK_SCHEDULER`."""
    if settings.dask_scheduler:
        from core.workflows.dask_executor import DaskExecutor

        return DaskExecutor(settings.dask_scheduler)
    from core.workflows.local_executor import LocalExecutor

    return LocalExecutor(settings.worker_count, preload=BUILTIN_DAG_MODULES)


def storage_secret(settings: Settings) -> str:
    """The secret signing browser sessions: configured, or generated once and kept in the data dir."""
    if settings.storage_secret:
        return settings.storage_secret
    path = settings.data_dir / "session.secret"
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()
