"""Synthetic series metadata with a realistic spread, loaded through Vireo's own index path.

Used by `bench/search.py` (100,000 and 1,000,000 series) and by the search tests (a few
hundred, checked against a plain-Python evaluator). Thousands of patients across TCIA-like
collections (`LUNG1-0042`), ~40 attributes per series, several modalities, body parts and
manufacturers, names with carets and umlauts, multi-valued ImageType and PixelSpacing, and
tags on a fraction of the series. Deterministic for a seed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import insert

from core.catalog import attribute_values
from core.db import Database
from core.models import Dataset, DatasetSeries, Patient, Series, SeriesTag, Study
from core.search.indexing import document_values, write_documents

COLLECTIONS = ["LUNG1", "HNSCC", "COVID19-CT", "BRATS", "PROSTATEx", "NSCLC-RADIOMICS", "KITS", "LIDC-IDRI", "CPTAC-PDA", "QIN-BREAST", "ACRIN-FLT", "RIDER-LUNG", "TCGA-GBM", "PANCREAS-CT"]
MODALITIES = [("CT", 35), ("MR", 25), ("PT", 10), ("SEG", 8), ("CR", 6), ("DX", 5), ("US", 4), ("RTSTRUCT", 4), ("SR", 3)]
BODY_PARTS = ["CHEST", "LUNG", "HEAD", "BRAIN", "ABDOMEN", "PELVIS", "PROSTATE", "BREAST", "KIDNEY", "NECK", "WHOLEBODY", "KNEE"]
MANUFACTURERS = [("SIEMENS", ["SOMATOM Definition AS", "Biograph mCT", "Skyra", "Prisma"]), ("GE MEDICAL SYSTEMS", ["Discovery CT750 HD", "Signa HDxt", "Revolution"]),
                 ("Philips", ["Ingenuity CT", "Achieva", "Ingenia"]), ("TOSHIBA", ["Aquilion ONE"]), ("Canon Medical Systems", ["Aquilion Prime SP"])]
INSTITUTIONS = ["Universitätsklinikum Heidelberg", "MAASTRO Clinic", "Charité Berlin", "Hôpital Européen Georges-Pompidou", "Mayo Clinic", "Karolinska"]
SERIES_DESCRIPTIONS = {
    "CT": ["CT CHEST W/O CONTRAST", "CT ABDOMEN W/ CONTRAST", "Lung_CT 1.0 B70f", "HEAD W/O CONTRAST 5mm", "CTA NECK", "LUNG CT low dose"],
    "MR": ["T1_MPRAGE_SAG", "t2_tse_tra", "AX FLAIR", "DWI b1000", "T1 POST GAD", "t1_mprage_tra_p2_iso"],
    "PT": ["PET WB AC", "PET WB NAC", "FDG Brain"],
    "SEG": ["Segmentation", "nnU-Net lung lobes", "Tumor SEG (manual)"],
    "CR": ["CHEST PA", "CHEST LAT"], "DX": ["KNEE AP", "CHEST AP portable"], "US": ["ABDOMEN US", "THYROID"],
    "RTSTRUCT": ["RTSTRUCT GTV", "Structure Set"], "SR": ["Dose Report", "Measurement Report"],
}
FIRST = ["Anna", "Jörg", "Müller", "José", "Zoë", "Li", "Ahmed", "Søren", "Chloé", "John", "Maria", "Łukasz"]
LAST = ["Müller", "Smith", "García", "Nguyen", "O'Brien", "Øverby", "Dubois", "Schäfer", "Kowalski", "Doe", "Tanaka", "Rossi"]
TAGS = ["reviewed", "train", "test", "needs-qc", "artefact", "gold standard", "excluded"]


@dataclass
class SyntheticSeries:
    patient_id: str
    patient_name: str
    patient_attributes: dict[str, Any]
    study_uid: str
    study_date: str
    study_description: str
    study_attributes: dict[str, Any]
    series_uid: str
    modality: str
    series_description: str
    series_number: int
    series_attributes: dict[str, Any]
    instances: int
    tags: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)


def _uid(rng: random.Random) -> str:
    return "1.2.826.0.1.3680043.8.498." + str(rng.getrandbits(120))


def generate(count: int, seed: int = 7) -> Iterator[SyntheticSeries]:
    """`count` series: ~4 series per study, ~2 studies per patient."""
    rng = random.Random(seed)
    modalities = [m for m, w in MODALITIES for _ in range(w)]
    made = 0
    patient_number = 0
    while made < count:
        patient_number += 1
        collection = COLLECTIONS[patient_number % len(COLLECTIONS)]
        patient_id = f"{collection}-{patient_number:04d}"
        name = f"{rng.choice(LAST)}^{rng.choice(FIRST)}"
        sex = rng.choice("MFO")
        birth = f"{rng.randint(1930, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        patient = {"PatientName": name, "PatientID": patient_id, "PatientSex": sex, "PatientBirthDate": birth, "PatientIdentityRemoved": "YES"}
        for _study in range(rng.choice([1, 1, 2, 2, 3])):
            study_uid = _uid(rng)
            date = datetime(2008, 1, 1) + timedelta(days=rng.randint(0, 16 * 365))
            study_date = date.strftime("%Y%m%d")
            body_part = rng.choice(BODY_PARTS)
            manufacturer, models = rng.choice(MANUFACTURERS)
            study_description = rng.choice([f"{body_part} STUDY", f"{collection} baseline", f"Follow-up {body_part.title()}", "Research protocol"])
            study = {
                "StudyDate": study_date, "StudyTime": f"{rng.randint(7, 19):02d}{rng.randint(0, 59):02d}00",
                "StudyDescription": study_description, "AccessionNumber": f"ACC{rng.randint(0, 10**8):08d}",
                "ReferringPhysicianName": f"{rng.choice(LAST)}^{rng.choice(FIRST)}", "StudyID": str(rng.randint(1, 9999)),
                "PatientAge": f"{rng.randint(18, 90):03d}Y", "PatientWeight": round(rng.uniform(45, 120), 1),
                "ClinicalTrialProtocolID": collection,
            }
            for number in range(1, rng.choice([2, 3, 4, 5, 6]) + 1):
                if made >= count:
                    return
                modality = rng.choice(modalities)
                description = rng.choice(SERIES_DESCRIPTIONS[modality])
                series = {
                    "Modality": modality, "SeriesDescription": description, "SeriesNumber": number,
                    "BodyPartExamined": body_part, "Manufacturer": manufacturer, "ManufacturerModelName": rng.choice(models),
                    "InstitutionName": rng.choice(INSTITUTIONS), "StationName": f"ST{rng.randint(1, 40):02d}",
                    "SeriesDate": study_date, "ProtocolName": f"{body_part.lower()}_{modality.lower()}_{rng.randint(1, 5)}",
                    "FrameOfReferenceUID": _uid(rng), "SOPClassUID": f"1.2.840.10008.5.1.4.1.1.{rng.choice([2, 4, 128, 66])}",
                    "ImageType": ["ORIGINAL", "PRIMARY", rng.choice(["AXIAL", "LOCALIZER", "OTHER"])] if rng.random() < 0.7 else ["DERIVED", "SECONDARY"],
                    "SliceThickness": rng.choice([0.625, 1.0, 1.25, 2.0, 2.5, 3.0, 5.0]), "PixelSpacing": [0.7, 0.7] if rng.random() < 0.5 else [0.9765625, 0.9765625],
                    "Rows": 512, "Columns": rng.choice([512, 256]), "KVP": rng.choice([80, 100, 120, 140]),
                    "ContrastBolusAgent": rng.choice(["", "", "Omnipaque 350", "Gadovist"]) or None,
                    "ConvolutionKernel": rng.choice(["B70f", "B30f", "STANDARD", "LUNG"]), "PatientPosition": rng.choice(["HFS", "FFS"]),
                    "SeriesTime": f"{rng.randint(7, 19):02d}{rng.randint(0, 59):02d}{rng.randint(0, 59):02d}",
                    "SoftwareVersions": f"VA{rng.randint(10, 60)}", "ScanOptions": rng.choice(["HELICAL MODE", "AXIAL MODE", None]),
                    "AcquisitionDate": study_date, "Laterality": rng.choice(["L", "R", None, None]),
                }
                series = {k: v for k, v in series.items() if v is not None}
                tags = rng.sample(TAGS, rng.choice([0, 0, 0, 1, 1, 2])) if rng.random() < 0.4 else []
                datasets = [collection] + (["pilot"] if rng.random() < 0.1 else [])
                made += 1
                yield SyntheticSeries(
                    patient_id, name, patient, study_uid, study_date, study_description, study, _uid(rng), modality, description, number, series,
                    rng.randint(1, 400), tags, datasets,
                )


def load(db: Database, items: list[SyntheticSeries]) -> float:
    """Rows for patients, studies and series, then the search index through `write_documents`, tags and datasets.

    Returns the seconds spent building the search index (`write_documents`), the rest being the rows themselves.
    """
    now = datetime.now(timezone.utc)
    with db.engine.begin() as conn:
        patients: dict[str, int] = {}
        for item in items:
            if item.patient_id not in patients:
                patients[item.patient_id] = -1
        known = dict(conn.execute(Patient.__table__.select().with_only_columns(Patient.patient_id, Patient.id).where(Patient.patient_id.in_(list(patients)))).all())  # type: ignore[attr-defined, call-overload]
        new = [p for p in patients if p not in known]
        first = {i.patient_id: i for i in reversed(items)}
        if new:
            conn.execute(insert(Patient), [{"patient_id": p, "patient_name": first[p].patient_name, "attributes": first[p].patient_attributes, "created": now} for p in new])
            known = dict(conn.execute(Patient.__table__.select().with_only_columns(Patient.patient_id, Patient.id).where(Patient.patient_id.in_(list(patients)))).all())  # type: ignore[attr-defined, call-overload]
        studies = {i.study_uid: i for i in items}
        existing = set(conn.execute(Study.__table__.select().with_only_columns(Study.study_uid).where(Study.study_uid.in_(list(studies)))).scalars())  # type: ignore[attr-defined]
        rows = [{"study_uid": uid, "patient_pk": known[i.patient_id], "study_date": i.study_date, "study_description": i.study_description,
                 "attributes": {**i.patient_attributes, **i.study_attributes}, "created": now} for uid, i in studies.items() if uid not in existing]
        if rows:
            conn.execute(insert(Study), rows)
        conn.execute(insert(Series), [
            {"series_uid": i.series_uid, "study_uid": i.study_uid, "modality": i.modality, "series_description": i.series_description,
             "series_number": i.series_number, "attributes": i.series_attributes, "arrived": now, "updated": now, "instance_count": i.instances,
             "size_bytes": i.instances * 525_000, "missing_instance_numbers": [], "is_complete": True} for i in items
        ])
        started = time.perf_counter()
        documents = {i.series_uid: (i.study_uid, known[i.patient_id], _values(i)) for i in items}
        write_documents(conn, documents)
        indexing = time.perf_counter() - started
        tag_rows = [{"series_uid": i.series_uid, "tag": t, "added": now} for i in items for t in i.tags]
        if tag_rows:
            conn.execute(insert(SeriesTag), tag_rows)
        names = sorted({d for i in items for d in i.datasets})
        existing_sets = dict(conn.execute(Dataset.__table__.select().with_only_columns(Dataset.name, Dataset.id)).all())  # type: ignore[call-overload]
        missing = [n for n in names if n not in existing_sets]
        if missing:
            conn.execute(insert(Dataset), [{"name": n, "username": "bench", "created": now, "updated": now} for n in missing])
            existing_sets = dict(conn.execute(Dataset.__table__.select().with_only_columns(Dataset.name, Dataset.id)).all())  # type: ignore[call-overload]
        conn.execute(insert(DatasetSeries), [{"dataset_id": existing_sets[d], "series_uid": i.series_uid, "added": now} for i in items for d in i.datasets])
    return indexing


def _values(i: SyntheticSeries) -> dict[str, list[str]]:
    """The document of a synthetic series, through the same `attribute_values` the indexer uses (rows as plain objects)."""
    patient = SimpleNamespace(patient_id=i.patient_id, patient_name=i.patient_name)
    study = SimpleNamespace(study_uid=i.study_uid, study_date=i.study_date, study_description=i.study_description,
                            attributes={**i.patient_attributes, **i.study_attributes})
    series = SimpleNamespace(series_uid=i.series_uid, modality=i.modality, series_description=i.series_description,
                             series_number=i.series_number, attributes=i.series_attributes)
    return document_values(attribute_values(series, study, patient))  # type: ignore[arg-type]


def reference_documents(items: list[SyntheticSeries]) -> dict[str, dict[str, Any]]:
    """What the plain-Python evaluator searches: values by field, tags, datasets and the instance count."""
    docs: dict[str, dict[str, Any]] = {}
    for i in items:
        docs[i.series_uid] = {"values": _values(i), "tags": list(i.tags),
                              "datasets": list(i.datasets), "instances": i.instances, "study": i.study_uid, "patient": i.patient_id}
    return docs
