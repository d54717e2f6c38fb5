"""The import DAGs (tag `import`): DICOM from an uploaded zip, and NIfTI collections converted to DICOM and DICOM SEG.

Both take no input series; their `upload` names a zip file (or a folder) in the upload area.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.workflows.context import JobContext
from core.workflows.dag import Dag, DagInput, Step

# Imported by each job worker at its start rather than by every job (highdicom alone takes a second).
WORKER_IMPORTS = ("nibabel", "highdicom", "ingest.nifti_convert", "ingest.nifti_formats", "ingest.upload_import", "ingest.archives")


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


# ---- convert-niftis-to-dicoms-and-import-to-pacs --------------------------------------------

class NiftiConfig(_ImportConfig):
    dataset: str = Field("niftiupload", min_length=1, max_length=64, title="Dataset name", description="the dataset the imported series join (created if missing)")
    modality: str = Field("OT", min_length=1, max_length=16, title="Modality",
                          description="modality of the images of the basic format (CT, MR, … ; nnU-Net channels name their own)")
    skip_bad_cases: bool = Field(False, title="Skip bad cases", description="import the good cases and list the bad ones, instead of failing the job")

    @field_validator("modality")
    @classmethod
    def _modality(cls, value: str) -> str:
        from ingest.nifti_convert import MODALITIES

        value = value.strip().upper()
        value = "MR" if value in ("MRI", "MRT") else value
        if value not in MODALITIES:
            raise ValueError(f"{value!r} is not a DICOM modality (e.g. CT, MR, PT, OT)")
        return value


def _convert_niftis(ctx: JobContext) -> None:
    """Convert every case first, so that a bad case fails the job before anything enters the PACS.

    The unpacked upload is removed when the step ends, and the converted files too when it
    fails: a failed import leaves nothing behind in the job's folder. The UIDs are derived
    from the upload's content (and the modality asked for), so running the step again (a
    restart after a crash) converts to the very same instances, which the PACS already has.
    """
    import shutil

    from ingest.archives import ArchiveRefused, extract, remove_extracted
    from ingest.nifti_convert import CaseError
    from ingest.upload_import import ImportReport, upload_fingerprint, upload_source

    conf: NiftiConfig = ctx.conf  # type: ignore[assignment]
    source = upload_source(ctx.data_dir, conf.upload)
    report = ImportReport(conf.upload, conf.dataset)
    seed = f"vireo-nifti-import/{upload_fingerprint(source)}/{conf.modality}"
    converted_root = ctx.work_dir / "dicom"
    try:
        top = extract(source, ctx.work_dir / "upload", conf.upload)
        try:
            converted = _convert_cases(ctx, conf, top, seed, report)
        finally:
            remove_extracted(source, top)
    except BaseException as exc:
        shutil.rmtree(converted_root, ignore_errors=True)
        if isinstance(exc, (ArchiveRefused, CaseError)):
            raise ValueError(str(exc)) from exc
        raise
    (ctx.work_dir / "converted.json").write_text(json.dumps({"cases": converted, "skipped": report.skipped}))


def _convert_cases(ctx: JobContext, conf: NiftiConfig, top: Path, seed: str, report: Any) -> list[dict[str, Any]]:
    """Every case of the unpacked upload `top` to DICOM under the work dir; what the import step reads."""
    import shutil

    from ingest.nifti_convert import CaseError, convert_case
    from ingest.nifti_formats import find_collections

    plans = find_collections(top, conf.modality, upload_name=_upload_name(conf.upload))
    cases = [case for plan in plans for case in plan.cases]
    for case in cases:
        case.uid_seed = seed
    for plan in plans:
        ctx.log.info("%s: %s format, %d image files", plan.root.relative_to(top).as_posix() or conf.upload, plan.kind, len(plan.cases))
    converted = []
    for done, case in enumerate(cases, start=1):
        ctx.check_cancelled()
        out = ctx.work_dir / "dicom" / f"case-{done:05d}"
        try:
            result = convert_case(case, out)
        except CaseError as exc:
            if not conf.skip_bad_cases:
                raise CaseError(f"{exc} (nothing was imported)") from exc
            shutil.rmtree(out, ignore_errors=True)
            report.skip(case.label, str(exc))
            ctx.log.warning("skipped case %s: %s", case.label, exc)
            continue
        checked = [str(result.image_files[0]), *([str(result.seg_file)] if result.seg_file else [])]
        converted.append({"case": case.label, "folder": str(out), "series": result.series_uid, "seg": result.seg_series_uid, "validate": checked})
        ctx.log.info("%s: %d slices%s", case.label, len(result.image_files), " and a SEG" if result.seg_file else "")
        ctx.progress(done, len(cases))
    return converted


def _upload_name(upload: str) -> str:
    """The upload's own name ("scans/brain.zip" -> "brain"): what its top-level files are known by."""
    name = PurePosixPath(upload.rstrip("/")).name
    return name[:-4] if name.lower().endswith(".zip") else name


def _start_validation(cases: list[dict[str, Any]]) -> tuple[Any, list[tuple[str, Path, Any]]]:
    """Start dciodvfy (Debian dicom3tools, where installed) on each case's first slice and its SEG, one file at a time.

    It runs beside the import (a large SEG takes it seconds of the other core) and
    `_report_validation` logs what it found.
    """
    import shutil
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dciodvfy")
    if shutil.which("dciodvfy") is None:
        return pool, []

    def check(path: str) -> str:
        return subprocess.run(["dciodvfy", path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300).stdout

    return pool, [(case["case"], Path(path), pool.submit(check, path)) for case in cases for path in case.get("validate", [])]


def _report_validation(ctx: JobContext, started: tuple[Any, list[tuple[str, Path, Any]]]) -> None:
    pool, checks = started
    for label, path, check in checks:
        try:
            output = check.result()
        except Exception as exc:  # a validator that fails must not fail the import
            ctx.log.warning("dciodvfy %s (%s) could not run: %s", label, path.name, exc)
            continue
        for line in output.splitlines():
            if line.startswith(("Error", "Warning")):
                (ctx.log.error if line.startswith("Error") else ctx.log.info)("dciodvfy %s (%s): %s", label, path.name, line)
    pool.shutdown()


def _import_converted(ctx: JobContext) -> None:
    from ingest.intake import Origin
    from ingest.upload_import import ImportReport, PacsImporter, write_report

    conf: NiftiConfig = ctx.conf  # type: ignore[assignment]
    plan = json.loads((ctx.work_dir / "converted.json").read_text())
    report = ImportReport(conf.upload, conf.dataset, skipped=plan["skipped"])
    files = [p for case in plan["cases"] for p in sorted(Path(case["folder"]).rglob("*.dcm"))]
    validation = _start_validation(plan["cases"])
    with PacsImporter(ctx.db, ctx.store, Origin(dataset=conf.dataset, calling_aet="NIFTI-UPLOAD")) as importer:
        for done, path in enumerate(files, start=1):
            ctx.check_cancelled()
            if not importer.add(path.name, path.read_bytes(), report):
                raise RuntimeError(f"a converted file was refused: {report.skipped[-1]['reason']}")
            ctx.progress(done, len(files))
        importer.flush(report)
    _report_validation(ctx, validation)
    report.notes = [f"{case['case']} -> series {case['series']}" + (f", SEG {case['seg']}" if case["seg"] else "") for case in plan["cases"]]
    write_report(ctx, report)
    ctx.log.info("imported %d cases as %d series (%d instances); skipped %d cases", len(plan["cases"]), len(report.series), sum(report.series.values()), len(report.skipped))


import_niftis = Dag(
    dag_id="convert-niftis-to-dicoms-and-import-to-pacs",
    description="Convert uploaded NIfTI files (basic or nnU-Net v2 layout) to DICOM image series and DICOM SEG, and import them into a dataset.",
    steps=[Step("convert", _convert_niftis), Step("import", _import_converted), Step("finish", _finish_import)],
    config=NiftiConfig,
    input=DagInput.NONE,
    tags=("import",),
)


# ---- export-nnunet-dataset ------------------------------------------------------------------

class ExportNnunetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("Dataset001_Vireo", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", title="nnU-Net dataset name")


def _export_nnunet(ctx: JobContext) -> None:
    import os
    import zipfile

    from ingest.nifti_export import export_nnunet

    conf: ExportNnunetConfig = ctx.conf  # type: ignore[assignment]
    folder = ctx.work_dir / conf.name
    spec = export_nnunet(ctx.series, folder, conf.name, ctx.log)
    target = ctx.output_file(f"{conf.name}.zip")
    part = target.with_name(target.name + ".part")
    with zipfile.ZipFile(part, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"{conf.name}/{path.relative_to(folder).as_posix()}")
    os.replace(part, target)
    ctx.log.info("%s: %d training cases, channels %s, labels %s", target.name, spec["numTraining"], spec["channel_names"], spec["labels"])


export_nnunet_dataset = Dag(
    dag_id="export-nnunet-dataset",
    description="Export a dataset's images and the labels of its SEGs as an nnU-Net v2 dataset (a zip to download).",
    steps=[Step("export", _export_nnunet)],
    config=ExportNnunetConfig,
    tags=("export",),
)
