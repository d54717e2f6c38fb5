"""Seeding the demo: generated patients brought in through Vireo's real doors, once per data dir.

Why through the doors: the demo is also a smoke test a newcomer can watch. CT and MR series
and their SEGs travel over a real DICOM association to our own receiver (the called AE title
names the dataset, as for any modality); a NIfTI collection is zipped into the upload area and
imported by the `convert-niftis-to-dicoms-and-import-to-pacs` workflow; tags and datasets go
through the same core services the API uses; a couple of workflows run on the engine.

It runs in a thread of its own after start-up and reports progress on `DemoSeeder.progress`
(and the event bus), which the Datasets page shows live. A marker file in the data dir says it
is done; a later start finds it and seeds nothing. Every UID is derived, so an interrupted
seeding that runs again stores nothing twice.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.demo import phantoms as ph

if TYPE_CHECKING:
    from app.services import Services

log = logging.getLogger(__name__)

DEMO_PROGRESS = "demo.progress"  # bus topic; payload: the DemoProgress as a dict
MARKER = "seeded.json"
DEMO_USER = "admin"
NIFTI_UPLOAD = "demo/brain-mr-nifti.zip"
WORKFLOW_TIMEOUT_S = 240


@dataclass
class DemoProgress:
    state: str = "idle"  # idle → seeding → ready | failed
    step: str = ""
    done: int = 0
    total: int = 1
    reused: bool = False
    error: str = ""
    seconds: float = 0.0

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 1.0


class SeedingStopped(Exception):
    """Vireo is shutting down while the demo seeds."""


# ---- what the demo holds ----------------------------------------------------------------------

PATIENTS = [
    ph.Patient("DEMO-001", "Demo^Alice", "F", "19620314"),
    ph.Patient("DEMO-002", "Demo^Bruno", "M", "19550902"),
    ph.Patient("DEMO-003", "Demo^Chiara", "F", "19780121"),
    ph.Patient("DEMO-004", "Demo^Dmitri", "M", "19840617"),
    ph.Patient("DEMO-005", "Demo^Eun-ji", "F", "19911105"),
]
TOUR_PATIENT = ph.Patient("DEMO-006", "Demo^Farah", "F", "19700430")
NIFTI_PATIENT = ph.Patient("DEMO-007", "Demo^Goran", "M", "19660808")

CT_DATASET = "chest-abdomen-ct"  # the called AE titles the CTs and MRs are sent to
MR_DATASET = "brain-mr"
NIFTI_DATASET = "nifti-import"


@dataclass(frozen=True)
class DemoSeries:
    spec: ph.SeriesSpec
    seed: int
    dataset: str  # called AE title
    segment: bool = False
    lesion: bool = False
    tags: tuple[str, ...] = ()


def _ct(patient: ph.Patient, key: str, date: str, seed: int, contrast: bool, segment: bool, tags: tuple[str, ...] = ()) -> DemoSeries:
    study = ph.Study(patient, key, date, "CT THORAX ABDOMEN" + (" WITH CONTRAST" if contrast else ""), "CHEST")
    description = "Thorax-Abdomen 6mm" + (" venous phase" if contrast else " native")
    return DemoSeries(ph.SeriesSpec(study, "CT", 2, description, contrast=contrast), seed, CT_DATASET, segment, tags=tags)


def _mr(patient: ph.Patient, key: str, date: str, seed: int, weightings: tuple[str, ...], lesion: bool, tags: dict[str, tuple[str, ...]]) -> list[DemoSeries]:
    study = ph.Study(patient, key, date, "MR BRAIN", "HEAD")
    names = {"T1": "T1 GRE axial", "T2": "T2 TSE axial", "FLAIR": "FLAIR axial"}
    return [
        DemoSeries(ph.SeriesSpec(study, "MR", number, names[w], weighting=w), seed, MR_DATASET, segment=lesion and w == "T2", lesion=lesion, tags=tags.get(w, ()))
        for number, w in enumerate(weightings, start=3)
    ]


def demo_series() -> list[DemoSeries]:
    """Five patients: CTs of chest and abdomen (two with organ SEGs), MR heads (one with a lesion SEG)."""
    a, b, c, d, e = PATIENTS
    return [
        _ct(a, "ct-2025", "20250310", 11, contrast=True, segment=True, tags=("contrast", "teaching")),
        *_mr(a, "mr-2025", "20250312", 12, ("T1", "T2"), lesion=False, tags={"T1": ("teaching",)}),
        _ct(b, "ct-2024", "20240618", 21, contrast=False, segment=True),
        _ct(b, "ct-2025", "20250120", 22, contrast=True, segment=False, tags=("contrast", "follow-up")),
        *_mr(c, "mr-2025", "20250402", 31, ("T1", "T2", "FLAIR"), lesion=True, tags={"T2": ("lesion", "teaching"), "FLAIR": ("lesion",)}),
        _ct(d, "ct-2025", "20250211", 41, contrast=False, segment=False, tags=("motion-artifact",)),
        *_mr(d, "mr-2025", "20250215", 42, ("T2",), lesion=False, tags={}),
        *_mr(e, "mr-2024", "20241130", 51, ("T1", "FLAIR"), lesion=False, tags={"FLAIR": ("needs-review",)}),
    ]


def _volume(item: DemoSeries) -> ph.Volume:
    if item.spec.modality == "CT":
        return ph.ct_torso(item.seed, item.spec.contrast)
    return ph.mr_head(item.seed, item.spec.weighting, lesion=item.lesion)


# ---- the seeder -------------------------------------------------------------------------------

class DemoSeeder:
    """Seeds the demo into a running Vireo (in a thread of its own) and reports how far it got."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.folder = services.settings.data_dir / "demo"
        self.progress = DemoProgress()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def marker(self) -> Path:
        return self.folder / MARKER

    def start(self) -> None:
        """Seed in the background, unless this data dir holds a finished demo already."""
        if self.marker.exists():
            self.progress = DemoProgress(state="ready", done=1, total=1, reused=True, step="demo data from an earlier start")
            log.info("demo: reusing the demo seeded earlier in %s", self.folder)
            return
        self._thread = threading.Thread(target=self.run, name="demo-seeding", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Vireo shuts down: stop at the next step (no marker is written, so the next start seeds again)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(30)

    def _report_failure(self) -> None:
        """The demo failing must never take Vireo down: the page and the log say why."""
        self.services.bus.publish(DEMO_PROGRESS, **asdict(self.progress))

    def _report(self, step: str | None = None, advance: int = 0) -> None:
        if self._stopping.is_set():
            raise SeedingStopped()
        if step is not None:
            self.progress.step = step
            log.debug("demo: %s", step)
        self.progress.done += advance
        self.services.bus.publish(DEMO_PROGRESS, **asdict(self.progress))

    def run(self) -> None:
        started = time.monotonic()
        items = demo_series()
        segs = sum(1 for i in items if i.segment)
        # units: each series generated and sent, each SEG, the NIfTI import (3), tags and datasets, two workflows, the tour files
        self.progress = DemoProgress(state="seeding", total=len(items) + segs + 3 + 1 + 2 + 1)
        log.info("demo: seeding %d series of %d patients into %s", len(items) + segs, len(PATIENTS), self.services.settings.data_dir)
        try:
            work = self.folder / "work"
            shutil.rmtree(work, ignore_errors=True)
            uids = self._send_phantoms(items, work)
            nifti_workflow = self._import_nifti(work)
            self._tags_and_datasets(items, uids)
            self._workflows()
            self._tour_files()
            shutil.rmtree(work, ignore_errors=True)
        except Exception as exc:
            if not (isinstance(exc, SeedingStopped) or self._stopping.is_set()):
                log.exception("demo: seeding failed")
                self.progress.state, self.progress.error = "failed", str(exc)
                self._report_failure()
                return
            log.info("demo: seeding stopped by the shutdown; the next start with --demo seeds again")
            return
        self.progress.seconds = round(time.monotonic() - started, 1)
        self.marker.write_text(json.dumps({"seeded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": self.progress.seconds,
                                           "series": sorted(uids.values()), "nifti_workflow": nifti_workflow}))
        self.progress.state, self.progress.done = "ready", self.progress.total
        self._report("demo ready")
        log.info("demo: seeded in %.1f s", self.progress.seconds)

    # -- DICOM over the network -----------------------------------------------------------------

    def _send_phantoms(self, items: list[DemoSeries], work: Path) -> dict[DemoSeries, str]:
        """Generate each series (and its SEG) and C-STORE it to our own receiver, one association per series."""
        sent: dict[DemoSeries, str] = {}
        for item in items:
            self._report(f"Generating and sending {item.spec.study.patient.patient_id} {item.spec.modality} {item.spec.description}")
            volume = _volume(item)
            files = ph.write_series(item.spec, volume, work / item.spec.uid)
            send_dicom(files, self._dicom_address(), item.dataset, self._calling_ae_title())
            sent[item] = item.spec.uid
            self._report(advance=1)
            if item.segment:
                self._report(f"Writing and sending a DICOM SEG over {item.spec.study.patient.patient_id} {item.spec.description}")
                seg = ph.write_seg(files, volume, item.spec, 300 + item.spec.number, work / f"{item.spec.uid}-seg")
                send_dicom([seg], self._dicom_address(), item.dataset, self._calling_ae_title())
                self._report(advance=1)
        return sent

    def _calling_ae_title(self) -> str:
        """Our own AE title, or one the receiver allows when VIREO_DICOM_ALLOWED_CALLING_AETS restricts who may send."""
        allowed = self.services.settings.allowed_calling_aets
        return "VIREO-DEMO" if not allowed or "VIREO-DEMO" in allowed else sorted(allowed)[0]

    def _dicom_address(self) -> tuple[str, int]:
        host = self.services.receiver.config.host
        return ("127.0.0.1" if host in ("", "0.0.0.0", "::") else host, self.services.receiver.port)

    # -- NIfTI through the upload area and the import workflow ---------------------------------

    def _import_nifti(self, work: Path) -> str:
        """Zip a basic-format NIfTI collection into the upload area and run the import DAG on it."""
        from core import datasets
        from core.uploads import UploadArea

        self._report("Importing a NIfTI collection (upload area and import workflow)")
        with self.services.db.session() as session:  # a seeding cut short after this step: its series are in (with new UIDs each time)
            try:
                if datasets.series_count(session, datasets.get_dataset(session, NIFTI_DATASET)):
                    self._report(advance=3)
                    return ""
            except LookupError:
                pass
        zip_path = work / "brain-mr-nifti.zip"
        write_nifti_collection(zip_path, NIFTI_PATIENT, seed=71)
        area = UploadArea(self.services.settings.data_dir / "uploads")
        with zip_path.open("rb") as handle:
            area.write_chunk(NIFTI_UPLOAD, handle)
        self._report(advance=1)
        workflow_id = self.services.workflows.create_workflow(
            dag_id="convert-niftis-to-dicoms-and-import-to-pacs", name="demo: import NIfTI brain MR with lesion",
            conf={"upload": NIFTI_UPLOAD, "dataset": NIFTI_DATASET, "modality": "MR"}, username=DEMO_USER,
        )
        self._report(advance=1)
        self._wait(workflow_id)
        self._report(advance=1)
        return workflow_id

    # -- tags and datasets through the core services --------------------------------------------

    def _tags_and_datasets(self, items: list[DemoSeries], uids: dict[DemoSeries, str]) -> None:
        from core import datasets, tags

        self._report("Tagging series and grouping them into datasets")
        by_tag: dict[str, list[str]] = {}
        for item in items:
            for tag in item.tags:
                by_tag.setdefault(tag, []).append(uids[item])
        with self.services.db.engine.begin() as conn:
            for tag, series in by_tag.items():
                tags.change_tags(conn, series, [tag], [])
        teaching = by_tag.get("teaching", [])
        segmented = [uids[i] for i in items if i.segment] + [ph.derived_uid("seg", uids[i]) for i in items if i.segment]
        with self.services.db.session() as session:
            for name, series in (("teaching-cases", teaching), ("with-segmentations", segmented)):
                try:
                    datasets.get_dataset(session, name)
                    datasets.change_members(session, name, series, [])
                except LookupError:
                    datasets.create_dataset(session, name, series, DEMO_USER)
        self._report(advance=1)

    # -- workflows on the engine ----------------------------------------------------------------

    def _workflows(self) -> None:
        """Two finished workflows a newcomer can open: a tagging run and a metadata table."""
        self._report("Running workflows: tag-dataset and collect-metadata")
        tagging = self.services.workflows.create_workflow(
            dag_id="tag-dataset", name="demo: mark the brain MRs as reviewed", dataset=MR_DATASET,
            conf={"action": "add", "tags": ["reviewed"]}, username=DEMO_USER,
        )
        metadata = self.services.workflows.create_workflow(
            dag_id="collect-metadata", name="demo: metadata table of the chest CTs", dataset=CT_DATASET,
            conf={"format": "csv"}, username=DEMO_USER,
        )
        for workflow_id in (tagging, metadata):
            self._wait(workflow_id)
            self._report(advance=1)

    def _wait(self, workflow_id: str) -> None:
        from core.workflows import queries

        deadline = time.monotonic() + WORKFLOW_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._stopping.is_set():
                raise SeedingStopped()
            with self.services.db.engine.connect() as conn:
                jobs = queries.get_workflow(conn, workflow_id)["jobs"]
            states = {j["status"] for j in jobs}
            if states <= {"finished"}:
                return
            if states & {"failed", "aborted", "deleted"}:
                raise RuntimeError(f"demo workflow {workflow_id} ended {', '.join(sorted(states))}; see its job log on the Workflow List")
            time.sleep(0.3)
        raise TimeoutError(f"demo workflow {workflow_id} did not finish within {WORKFLOW_TIMEOUT_S} s")

    # -- files for the README's tour ------------------------------------------------------------

    def _tour_files(self) -> None:
        """A CT folder to send with dcmsend and a NIfTI zip to upload: new data for the tour's own steps."""
        self._report("Writing the tour's example files")
        tour = self.folder / "tour"
        study = ph.Study(TOUR_PATIENT, "ct-tour", "20250501", "CT THORAX ABDOMEN", "CHEST")
        spec = ph.SeriesSpec(study, "CT", 2, "Thorax-Abdomen 6mm native")
        ph.write_series(spec, ph.ct_torso(61, False, slices=24), tour / "dicom")
        write_nifti_collection(tour / "brain-mr-nifti.zip", ph.Patient("DEMO-008", "Demo^Hana", "F", "19880219"), seed=81)
        self._report(advance=1)


def write_nifti_collection(path: Path, patient: ph.Patient, seed: int) -> None:
    """A zip in the basic NIfTI layout: a T1 brain, its lesion label map, seg_info.json and meta_data.json."""
    volume = ph.mr_head(seed, "T1", slices=20, size=128, lesion=True)
    folder = path.with_suffix("")
    shutil.rmtree(folder, ignore_errors=True)
    case = folder / "brain-mr"
    ph.write_nifti(volume, case / "Case01.nii.gz")
    ph.write_nifti(volume, case / "Case01_segmentation.nii.gz", label="lesion")
    (case / "seg_info.json").write_text(json.dumps({"algorithm": "vireo-demo-phantom", "task_body_part": "HEAD",
                                                    "seg_info": [{"label_name": "lesion", "label_int": 1}]}))
    (case / "meta_data.json").write_text(json.dumps({"global_tags": {
        "0010|0010": patient.name, "0010|0020": patient.patient_id, "0010|0040": patient.sex, "0010|0030": patient.birth_date,
        "0008|1030": "MR BRAIN (NIfTI)", "0008|103e": "T1 axial from NIfTI", "0008|0020": "20250520", "0008|0030": "101500",
    }}))
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(case.rglob("*")):
            archive.write(file, file.relative_to(folder).as_posix())
    shutil.rmtree(folder, ignore_errors=True)


def send_dicom(files: list[Path], address: tuple[str, int], called_ae_title: str, calling_ae_title: str = "VIREO-DEMO", attempts: int = 3) -> None:
    """C-STORE `files` over one association (pynetdicom StoreSCU); raises if any is not stored.

    A busy machine can hold an answer past a timeout: the series is then sent again on a new
    association (the receiver stores an instance it has once), up to `attempts` times.
    """
    from pydicom import dcmread

    datasets = [dcmread(p) for p in files]
    for attempt in range(1, attempts + 1):
        try:
            _store(datasets, files, address, called_ae_title, calling_ae_title)
            return
        except ConnectionError as exc:
            if attempt == attempts:
                raise RuntimeError(f"{exc} (tried {attempts} times)") from exc
            log.warning("demo: %s; sending the series again", exc)
            time.sleep(1)


def _store(datasets: list[Any], files: list[Path], address: tuple[str, int], called: str, calling: str) -> None:
    from pynetdicom import AE

    ae = AE(ae_title=calling)
    ae.acse_timeout, ae.dimse_timeout, ae.network_timeout = 60, 120, 120  # generous: a demo on a busy laptop is still a demo
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    assoc = ae.associate(address[0], address[1], ae_title=called)
    if not assoc.is_established:
        raise ConnectionError(f"the DICOM receiver at {address[0]}:{address[1]} refused or did not answer the association")
    try:
        for ds, path in zip(datasets, files):
            status = assoc.send_c_store(ds)
            if not status:
                raise ConnectionError(f"C-STORE of {path.name} got no answer")
            if int(status.Status) != 0:
                raise RuntimeError(f"C-STORE of {path.name} answered status 0x{int(status.Status):04X}")
    finally:
        if assoc.is_established:
            assoc.release()


def progress_of(seeder: DemoSeeder | None) -> dict[str, Any] | None:
    """The seeder's progress for a page (None when this Vireo runs without --demo)."""
    return None if seeder is None else {**asdict(seeder.progress), "fraction": seeder.progress.fraction}


__all__ = ["DEMO_PROGRESS", "DemoProgress", "DemoSeeder", "demo_series", "progress_of", "send_dicom", "write_nifti_collection"]
