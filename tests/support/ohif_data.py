"""A phantom CT with a SEG over it, written and sent to a Vireo for the OHIF tests and bench/ohif.py."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from app.demo import phantoms

PATIENT = phantoms.Patient("OHIF-0001", "Viewer^Olivia", "F", "19700101")


@dataclass(frozen=True)
class CtWithSeg:
    study_uid: str
    ct_uid: str
    seg_uid: str
    files: list[Path]
    slices: int


def write_ct_with_seg(out_dir: Path, slices: int, size: int = 192, key: str = "ohif") -> CtWithSeg:
    """`slices` axial CT slices of the torso phantom and a binary SEG of its organs."""
    study = phantoms.Study(PATIENT, f"{key}-{slices}", "20240105", "OHIF CT torso", "ABDOMEN")
    spec = phantoms.SeriesSpec(study, "CT", 1, f"CT torso {slices} slices")
    volume = phantoms.ct_torso(seed=7, contrast=False, slices=slices, size=size)
    files = phantoms.write_series(spec, volume, out_dir / "ct")
    seg = phantoms.write_seg(files, volume, spec, 90, out_dir / "seg")
    return CtWithSeg(study.uid, spec.uid, phantoms.derived_uid("seg", spec.uid), [*files, seg], slices)


def send(files: list[Path], dicom_port: int, calling: str = "OHIFTEST") -> None:
    """C-STORE the files to Vireo's receiver with DCMTK (one association)."""
    subprocess.run(["dcmsend", "-aet", calling, "-aec", "VIREO", "127.0.0.1", str(dicom_port), *map(str, files)],
                   check=True, capture_output=True, timeout=300)
