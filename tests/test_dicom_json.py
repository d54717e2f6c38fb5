"""DICOM JSON as WADO-RS metadata serves it: the fast raw-value path agrees with pydicom's own conversion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from core.dicom_json import BULK_BASE, dataset_json, instance_document, with_base
from tests.factories import (
    write_basic_text_sr, write_encapsulated_pdf, write_enhanced_ct, write_multiframe_sc, write_secondary_capture, write_seg, write_series,
)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("json")
    ct = write_series(out, modality="CT", slices=3, rows=32, columns=32, patient_name="Müller^Jürgen", seed=61)
    mr = write_series(out, modality="MR", slices=2, rows=32, columns=32, seed=62, mr_contrast="FLAIR")
    return [
        ct.paths[0], mr.paths[0], write_seg(out, ct, frames=3),
        write_basic_text_sr(out, ct).paths[0], write_encapsulated_pdf(out, ct).paths[0],
        write_enhanced_ct(out, ct, frames=3).paths[0], write_multiframe_sc(out, ct, frames=3, rows=16, columns=16).paths[0],
        write_secondary_capture(out, ct, rows=16, columns=16, rgb=True).paths[0],
    ]


def _converted(ds: Dataset) -> Dataset:
    """The same dataset with every element converted by pydicom (so the fast path never applies)."""
    for element in ds.iterall():
        _ = element.value
    return ds


def test_fast_path_matches_pydicom_conversion(files: list[Path]) -> None:
    for path in files:
        fast = dataset_json(dcmread(path), "B")
        slow = dataset_json(_converted(dcmread(path)), "B")
        assert fast == slow, path.name


def test_document_has_bulk_uris_not_bulk_data(files: list[Path]) -> None:
    ds = dcmread(files[0])
    document = instance_document(ds, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    parsed = json.loads(with_base(document, "http://host/dicomweb"))
    assert parsed["7FE00010"] == {
        "vr": "OW", "BulkDataURI": f"http://host/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/bulkdata/7FE00010"}
    assert parsed["00100010"]["Value"] == [{"Alphabetic": "Müller^Jürgen"}]
    assert parsed["00280010"] == {"vr": "US", "Value": [32]}
    assert BULK_BASE not in json.dumps(parsed)
    # Agrees with pydicom's reference DICOM JSON writer, bulk data aside
    reference = dcmread(files[0]).to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=lambda e: "uri")
    mine = json.loads(document)
    for tag, element in reference.items():
        if "BulkDataURI" in element or "InlineBinary" in element:
            continue
        assert mine[tag]["vr"] == element["vr"], tag
        assert mine[tag].get("Value") == element.get("Value"), tag
