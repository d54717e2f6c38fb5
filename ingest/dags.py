"""The built-in DAGs: deleting, sending, tagging, thumbnails, downloads, metadata, and the service DAGs.

Each is a `Dag` at module level (the registry collects them). Steps run in a job process of
their own, so they use the database, the PACS store and the thumbnails folder directly and
tell the running Vireo what changed through the context.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.tags import check_tag
from core.workflows.context import JobContext
from core.workflows.dag import Dag, DagInput, NoConfig, Step


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- delete-series --------------------------------------------------------------------------

class DeleteSeriesConfig(_Config):
    delete_complete_study: bool = Field(False, title="Delete complete study", description="also delete every other series of the studies the selected series belong to")


def _series_to_delete(ctx: JobContext) -> None:
    from sqlalchemy import select

    from core.models import Series

    uids = set(ctx.series_uids)
    with ctx.db.engine.connect() as conn:
        if ctx.conf.delete_complete_study:  # type: ignore[attr-defined]
            studies: set[str] = set()
            for start in range(0, len(ctx.series_uids), 500):
                chunk = ctx.series_uids[start : start + 500]
                studies.update(conn.execute(select(Series.study_uid).where(Series.series_uid.in_(chunk))).scalars())  # type: ignore[attr-defined]
            for start in range(0, len(studies), 500):
                chunk_s = sorted(studies)[start : start + 500]
                uids.update(conn.execute(select(Series.series_uid).where(Series.study_uid.in_(chunk_s))).scalars())  # type: ignore[attr-defined]
        rows = []
        ordered = sorted(uids)
        for start in range(0, len(ordered), 500):
            chunk = ordered[start : start + 500]
            rows.extend(conn.execute(select(Series.series_uid, Series.study_uid).where(Series.series_uid.in_(chunk))).all())  # type: ignore[attr-defined]
    plan = [{"series": uid, "study": study} for uid, study in rows]
    (ctx.work_dir / "to-delete.json").write_text(json.dumps(plan))
    ctx.log.info("%d series to delete (%d selected%s)", len(plan), len(ctx.series_uids), ", complete studies" if ctx.conf.delete_complete_study else "")  # type: ignore[attr-defined]


def _delete_from_index(ctx: JobContext) -> None:
    from core.series_removal import delete_series

    plan = json.loads((ctx.work_dir / "to-delete.json").read_text())
    uids = [p["series"] for p in plan]
    with ctx.db.engine.begin() as conn:
        # search entry, instances, tags, dataset memberships, then empty studies and patients
        files = delete_series(conn, uids)
    (ctx.work_dir / "files.json").write_text(json.dumps(files))
    ctx.log.info("removed %d series (%d instances) from the index", len(uids), len(files))
    ctx.report_series_deleted(uids)


def _delete_files(ctx: JobContext) -> None:
    plan = json.loads((ctx.work_dir / "to-delete.json").read_text())
    files = json.loads((ctx.work_dir / "files.json").read_text())
    for done, relative in enumerate(files, start=1):
        ctx.store.path(relative).unlink(missing_ok=True)
        if done % 100 == 0 or done == len(files):
            ctx.progress(done, len(files))
    thumbnails = ctx.data_dir / "thumbnails"
    for item in plan:  # the series' folders (with files the index did not know) and thumbnails
        folder = ctx.store.root / item["study"] / item["series"]
        shutil.rmtree(folder, ignore_errors=True)
        (thumbnails / f"{item['series']}.png").unlink(missing_ok=True)
        study = folder.parent
        if study.is_dir() and not any(study.iterdir()):
            study.rmdir()
    ctx.log.info("deleted %d files of %d series", len(files), len(plan))


delete_series = Dag(
    dag_id="delete-series",
    description="Delete series from the PACS: files, index entries, thumbnails and dataset memberships (optionally their complete studies).",
    steps=[Step("plan", _series_to_delete), Step("delete-from-index", _delete_from_index), Step("delete-files", _delete_files, retries=2)],
    config=DeleteSeriesConfig,
    max_active=1,
    destructive=True,
)


# ---- send-dicom -----------------------------------------------------------------------------

class SendDicomConfig(_Config):
    host: str = Field(..., min_length=1, title="Host", description="address of the receiving DICOM node")
    port: int = Field(11112, ge=1, le=65535, title="Port")
    called_ae_title: str = Field("ANY-SCP", min_length=1, max_length=16, title="Called AE title", description="the receiver's AE title (Vireo: the dataset to store into)")
    calling_ae_title: str = Field("VIREO", min_length=1, max_length=16, title="Calling AE title")


def _send(ctx: JobContext) -> None:
    from pydicom import dcmread
    from pynetdicom import AE

    conf: SendDicomConfig = ctx.conf  # type: ignore[assignment]
    files = [path for s in ctx.series for path in s.files]
    if not files:
        ctx.log.warning("nothing to send")
        return
    contexts: dict[tuple[str, str], None] = {}
    for path in files:
        meta = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        contexts[(str(meta.SOPClassUID), str(meta.file_meta.TransferSyntaxUID))] = None
    ae = AE(ae_title=conf.calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    by_class: dict[str, list[str]] = {}
    for sop_class, syntax in contexts:
        by_class.setdefault(sop_class, []).append(syntax)
    for sop_class, syntaxes in list(by_class.items())[:128]:
        ae.add_requested_context(sop_class, sorted(set(syntaxes) | {"1.2.840.10008.1.2.1"}))
    ctx.log.info("sending %d instances of %d series to %s@%s:%d", len(files), len(ctx.series), conf.called_ae_title, conf.host, conf.port)
    assoc = ae.associate(conf.host, conf.port, ae_title=conf.called_ae_title)
    if not assoc.is_established:
        raise RuntimeError(f"could not associate with {conf.called_ae_title}@{conf.host}:{conf.port}")
    failed: list[str] = []
    try:
        for done, path in enumerate(files, start=1):
            ctx.check_cancelled()
            status = assoc.send_c_store(dcmread(path))
            code = getattr(status, "Status", None)
            if code is None or code not in (0x0000, 0xB000, 0xB007, 0xB006):
                failed.append(f"{path.name}: status {'none' if code is None else hex(code)}")
            ctx.progress(done, len(files))
    finally:
        assoc.release()
    if failed:
        for line in failed[:50]:
            ctx.log.error("not stored: %s", line)
        raise RuntimeError(f"{len(failed)} of {len(files)} instances were not stored")
    ctx.log.info("sent %d instances", len(files))


send_dicom = Dag(
    dag_id="send-dicom",
    description="Send series to a DICOM node (C-STORE) at a host, port and AE title.",
    steps=[Step("send", _send, retries=1, retry_delay=2.0)],
    config=SendDicomConfig,
)


# ---- tag-dataset ----------------------------------------------------------------------------

class TagConfig(_Config):
    action: Literal["add", "delete"] = Field("add", title="Action")
    tags: list[str] = Field(..., min_length=1, title="Tags", description="tags to add or delete (a comma-separated text is split)")

    @field_validator("tags", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list):
            value = [str(v).strip() for v in value if str(v).strip()]
            for tag in value:
                check_tag(tag)  # TagError is a ValueError: pydantic reports it on the field
        return value


def _tag(ctx: JobContext) -> None:
    from core.tags import change_tags

    conf: TagConfig = ctx.conf  # type: ignore[assignment]
    add, remove = (conf.tags, []) if conf.action == "add" else ([], conf.tags)
    uids = [s.series_uid for s in ctx.series]
    for start in range(0, len(uids), 500):
        chunk = uids[start : start + 500]
        with ctx.db.engine.begin() as conn:  # atomic per series, never read-modify-write
            change_tags(conn, chunk, add, remove)
        ctx.progress(min(start + 500, len(uids)), len(uids))
    ctx.log.info("%s %s on %d series", "added" if add else "deleted", ", ".join(conf.tags), len(uids))
    ctx.series_changed(uids)


tag_dataset = Dag(
    dag_id="tag-dataset",
    description="Add or delete tags on the series of a dataset.",
    steps=[Step("tag", _tag)],
    config=TagConfig,
)


# ---- generate-thumbnail ---------------------------------------------------------------------

def _thumbnails(ctx: JobContext) -> None:
    from core.events import EventBus
    from ingest.thumbnail_service import ThumbnailService

    painter = ThumbnailService(ctx.db, ctx.store, ctx.data_dir / "thumbnails", EventBus())
    uids = [s.series_uid for s in ctx.series]
    for done, uid in enumerate(uids, start=1):
        ctx.check_cancelled()
        painter.render(uid)
        ctx.progress(done, len(uids))
    ctx.log.info("drew %d thumbnails", len(uids))
    ctx.series_changed(uids, thumbnails=True)


generate_thumbnail = Dag(
    dag_id="generate-thumbnail",
    description="Draw the thumbnails of series again.",
    steps=[Step("render", _thumbnails)],
)


# ---- download-series ------------------------------------------------------------------------

class DownloadConfig(_Config):
    format: Literal["dicom", "nifti"] = Field("dicom", title="Format", description="DICOM files as stored, or one NIfTI volume per image series")


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:64] or "unknown"


def _pack(ctx: JobContext) -> None:
    conf: DownloadConfig = ctx.conf  # type: ignore[assignment]
    name = f"{_safe(ctx.spec.dataset or 'series')}-{ctx.spec.job_id}.zip"
    target = ctx.output_file(name)
    part = target.with_name(target.name + ".part")
    series = ctx.series
    patients = _patient_ids(ctx, [s.series_uid for s in series])
    written = 0
    with zipfile.ZipFile(part, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for done, s in enumerate(series, start=1):
            ctx.check_cancelled()
            folder = f"{_safe(patients.get(s.series_uid, ''))}/{s.study_uid}/{s.series_uid}"
            if conf.format == "dicom":
                for path in s.files:
                    archive.write(path, f"{folder}/{path.name}", compress_type=zipfile.ZIP_STORED)
                    written += 1
            else:
                volume = _to_nifti(ctx, s)
                if volume is not None:
                    archive.write(volume, f"{folder}.nii.gz", compress_type=zipfile.ZIP_STORED)
                    volume.unlink()
                    written += 1
            ctx.progress(done, len(series))
    os.replace(part, target)
    ctx.log.info("%s: %d files of %d series", name, written, len(series))


def _patient_ids(ctx: JobContext, uids: list[str]) -> dict[str, str]:
    from sqlalchemy import select

    from core.models import Patient, Series, Study

    out: dict[str, str] = {}
    with ctx.db.engine.connect() as conn:
        for start in range(0, len(uids), 500):
            query = (
                select(Series.series_uid, Patient.patient_id)
                .join(Study, Study.study_uid == Series.study_uid)  # type: ignore[arg-type]
                .join(Patient, Patient.id == Study.patient_pk)  # type: ignore[arg-type]
                .where(Series.series_uid.in_(uids[start : start + 500]))  # type: ignore[attr-defined]
            )
            out.update({uid: pid for uid, pid in conn.execute(query)})
    return out


def _to_nifti(ctx: JobContext, series: Any) -> Path | None:
    """One image series as a NIfTI volume (SimpleITK reads the slices in geometric order)."""
    import SimpleITK as sitk

    if series.modality in ("SEG", "RTSTRUCT", "SR", "PR", "KO", "DOC") or not series.files:
        ctx.log.info("series %s (%s) has no image volume: left out of the NIfTI download", series.series_uid, series.modality)
        return None
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(series.files[0].parent), series.series_uid)
    reader.SetFileNames(list(names) or [str(p) for p in series.files])
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        ctx.log.warning("series %s could not be read as a volume: %s", series.series_uid, str(exc).strip().splitlines()[-1:])
        return None
    out = ctx.work_dir / f"{series.series_uid}.nii.gz"
    sitk.WriteImage(image, str(out), useCompression=True)
    return out


download_series = Dag(
    dag_id="download-series",
    description="Pack series into a zip to download: DICOM as stored, or NIfTI volumes.",
    steps=[Step("pack", _pack)],
    config=DownloadConfig,
)


# ---- collect-metadata -----------------------------------------------------------------------

DEFAULT_ATTRIBUTES = ["PatientID", "StudyInstanceUID", "StudyDate", "SeriesInstanceUID", "Modality", "SeriesDescription", "instances", "tags", "datasets"]


class CollectMetadataConfig(_Config):
    attributes: list[str] = Field(default_factory=lambda: list(DEFAULT_ATTRIBUTES), min_length=1, title="Attributes",
                                  description="DICOM keywords (and tags, datasets, instances) to collect, one column each")
    format: Literal["csv", "json"] = Field("csv", title="Format")

    @field_validator("attributes", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        return value


def _collect(ctx: JobContext) -> None:
    from core import catalog

    conf: CollectMetadataConfig = ctx.conf  # type: ignore[assignment]
    records = []
    with ctx.db.session() as session:
        for done, uid in enumerate(ctx.series_uids, start=1):
            try:
                doc = catalog.get_series(session, uid)
            except catalog.UnknownSeries:
                ctx.log.warning("series %s is no longer in the index", uid)
                continue
            records.append({a: doc.get(a) for a in conf.attributes})
            ctx.progress(done, len(ctx.series_uids))
    name = f"metadata-{ctx.spec.job_id}.{conf.format}"
    part = ctx.output_file(name + ".part")
    if conf.format == "json":
        part.write_text(json.dumps(records, indent=1, default=str))
    else:
        from ingest.spreadsheet_cells import QUOTING, inert_text, spreadsheet_cell

        with part.open("w", newline="") as handle:
            writer = csv.writer(handle, quoting=QUOTING)  # text quoted and made inert: DICOM values are the sender's words
            writer.writerow([inert_text(a) for a in conf.attributes])
            for record in records:
                writer.writerow([spreadsheet_cell(record[a]) for a in conf.attributes])
    os.replace(part, ctx.output_file(name))
    ctx.log.info("%s: %d series, %d attributes", name, len(records), len(conf.attributes))


collect_metadata = Dag(
    dag_id="collect-metadata",
    description="Collect chosen attributes of series into a CSV or JSON file to download.",
    steps=[Step("collect", _collect)],
    config=CollectMetadataConfig,
)


# ---- service DAGs ---------------------------------------------------------------------------

def _reindex(ctx: JobContext) -> None:
    from ingest.indexer import IndexWriter
    from ingest.reindex import ReindexReport, _drop_rows_without_files, index_files

    writer = IndexWriter(ctx.db)
    report = ReindexReport()
    files = list(ctx.store.walk())
    ctx.log.info("re-reading %d files", len(files))
    for start in range(0, len(files), 500):
        ctx.check_cancelled()
        index_files(ctx.store, writer, files[start : start + 500], report)
        ctx.progress(min(start + 500, len(files)), len(files))
    report.removed_rows = _drop_rows_without_files(ctx.store, writer)
    ctx.log.info("reindexed %d of %d files; removed %d rows whose files are gone", report.indexed, report.files, report.removed_rows)
    for path, reason in report.unreadable:
        ctx.log.warning("could not read %s: %s", path, reason)
    ctx.report_series_deleted(None)


re_index = Dag(
    dag_id="service-re-index-dicom-data",
    description="Rebuild the index from the PACS files: add what is missing, drop entries whose files are gone.",
    steps=[Step("reindex", _reindex)],
    input=DagInput.NONE,
    service=True,
    max_active=1,
    config=NoConfig,
)


def _index_incoming(ctx: JobContext) -> None:
    from ingest.indexer import IndexWriter
    from ingest.reindex import ReindexReport, index_files

    paths = []
    for uid in ctx.series_uids:
        paths.extend(sorted(p for folder in ctx.store.root.glob(f"*/{uid}") for p in folder.glob("*.dcm")))
    report = ReindexReport()
    index_files(ctx.store, IndexWriter(ctx.db), paths, report)
    ctx.log.info("indexed %d of %d files of %d series", report.indexed, report.files, len(ctx.series_uids))
    if report.unreadable:
        raise RuntimeError(f"{len(report.unreadable)} files could not be read, e.g. {report.unreadable[0][0]}: {report.unreadable[0][1]}")
    ctx.series_changed(ctx.series_uids)


process_incoming = Dag(
    dag_id="service-process-incoming-dcm",
    description="Index arrived DICOM and draw its thumbnails (the receiver does this as series arrive; a restart does it again).",
    steps=[Step("index", _index_incoming), Step("thumbnails", _thumbnails)],
    service=True,
    ui_visible=False,
)
