"""The import DAGs (tag `import`): DICOM from an uploaded zip, and NIfTI collections converted to DICOM and DICOM SEG.

Both take no input series; their `upload` names a zip file (or a folder) in the upload area.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.workflows.context import JobContext
from core.workflows.dag import Dag, DagInput, Step


class _ImportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    upload: str = Field(..., min_length=1, title="Upload", description="a zip file (or folder) in the upload area")
    dataset: str = Field(..., min_length=1, max_length=64, title="Dataset name", description="the dataset the imported series join (created if missing)")
    delete_original_file: bool = Field(False, title="Delete the upload after a successful import")

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value: str) -> str:
        value = value.strip().replace("/", "_").replace("\\", "_").lstrip(".")
        if not value:
            raise ValueError("the dataset name is empty")
        return value


# ---- import-dicoms-in-zip-to-internal-pacs --------------------------------------------------

class DicomZipConfig(_ImportConfig):
    dataset: str = Field("dicomupload", min_length=1, max_length=64, title="Dataset name", description="the dataset the imported series join (created if missing)")
    extension: str = Field(".dcm", min_length=1, max_length=32, title="File extension",
                           description="import files with this extension; * takes every file and recognises DICOM by its content")

    @field_validator("extension")
    @classmethod
    def _extension(cls, value: str) -> str:
        value = value.strip().lower()
        if value in ("*", "*.*", ""):
            return "*"
        value = value.lstrip("*")
        return value if value.startswith(".") else "." + value


def _is_macos_metadata(name: str) -> bool:
    path = PurePosixPath(name)
    return "__MACOSX" in path.parts or path.name.startswith("._") or path.name == ".DS_Store"


def _import_dicom_zip(ctx: JobContext) -> None:
    from ingest.archives import ArchiveRefused, members
    from ingest.upload_import import ImportReport, upload_source, write_report

    conf: DicomZipConfig = ctx.conf  # type: ignore[assignment]
    source = upload_source(ctx.data_dir, conf.upload)
    report = ImportReport(conf.upload, conf.dataset)
    try:
        with members(source, conf.upload) as found:  # the whole archive is checked before anything is imported
            _import_members(ctx, conf, found, report)
    except ArchiveRefused as exc:
        raise ValueError(str(exc)) from exc
    write_report(ctx, report)
    for item in report.skipped[:200]:
        ctx.log.warning("skipped %s: %s", item["file"], item["reason"])
    ctx.log.info("imported %d instances in %d series; skipped %d files", sum(report.series.values()), len(report.series), len(report.skipped))
    if report.skipped and not report.series:
        raise ValueError(f"{conf.upload}: none of its files could be imported as DICOM (see the skipped files above)")


def _import_members(ctx: JobContext, conf: DicomZipConfig, found: list[Any], report: Any) -> None:
    from ingest.intake import Origin
    from ingest.upload_import import PacsImporter

    ctx.log.info("%s: %d files; importing those %s into dataset %s", conf.upload, len(found),
                 "recognised as DICOM" if conf.extension == "*" else f"ending in {conf.extension}", conf.dataset)
    with PacsImporter(ctx.db, ctx.store, Origin(dataset=conf.dataset, calling_aet="UPLOAD")) as importer:
        for done, member in enumerate(found, start=1):
            ctx.check_cancelled()
            if _is_macos_metadata(member.name):
                report.skip(member.name, "macOS metadata, not DICOM")
            elif conf.extension != "*" and not member.name.lower().endswith(conf.extension):
                report.skip(member.name, f"does not end in {conf.extension}")
            else:
                content = member.read()
                if conf.extension == "*" and content[128:132] != b"DICM":
                    report.skip(member.name, "not a DICOM file (no DICM preamble)")
                else:
                    importer.add(member.name, content, report)
            ctx.progress(done, len(found))
        importer.flush(report)


def _finish_import(ctx: JobContext) -> None:
    from ingest.upload_import import REPORT_NAME, delete_upload, draw_thumbnails

    report = json.loads(ctx.output_file(REPORT_NAME).read_text())
    draw_thumbnails(ctx, report["series"])
    if ctx.conf.delete_original_file:  # type: ignore[attr-defined]
        delete_upload(ctx, ctx.conf.upload)  # type: ignore[attr-defined]


import_dicom_zip = Dag(
    dag_id="import-dicoms-in-zip-to-internal-pacs",
    description="Import the DICOM files of an uploaded zip into the PACS, into a dataset (like a DICOM send).",
    steps=[Step("import", _import_dicom_zip), Step("finish", _finish_import)],
    config=DicomZipConfig,
    input=DagInput.NONE,
    tags=("import",),
)
