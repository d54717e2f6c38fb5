"""DICOMweb (QIDO-RS, WADO-RS, STOW-RS) against a running Vireo, with dicomweb-client as viewers' stand-in.

One Vireo for the module, loaded once with dcmsend: two patients' CT/MR series, a JPEG-LS
compressed series and a multi-frame instance. Everything a test stores through STOW goes
to series of its own, so the tests do not depend on one another's order.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urljoin

import httpx
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tests.factories import SeriesFiles, compress, write_multiframe_sc, write_series
from tests.support.vireo import VireoProcess

pytestmark = pytest.mark.timeout(240)


def _client(vireo: VireoProcess) -> DICOMwebClient:
    import requests

    session = requests.Session()
    session.auth = vireo.auth
    return DICOMwebClient(url=f"{vireo.url}/dicomweb", session=session)


class Loaded:
    def __init__(self, ct: SeriesFiles, ct2: SeriesFiles, mr: SeriesFiles, jls: SeriesFiles, multiframe: SeriesFiles) -> None:
        self.ct, self.ct2, self.mr, self.jls, self.multiframe = ct, ct2, mr, jls, multiframe


@pytest.fixture(scope="module")
def loaded(vireo: VireoProcess, tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    out = tmp_path_factory.mktemp("dicomweb-data")
    ct = write_series(out, modality="CT", slices=12, rows=64, columns=64, patient_id="DW1", patient_name="Müller^Hans", seed=11,
                      series_number=1, study_date="20240105", accession_number="ACC1")
    ct2 = write_series(out, modality="CT", slices=6, rows=64, columns=64, patient_id="DW1", patient_name="Müller^Hans", seed=11,
                       series_number=2, series_description="Lung 1mm", study_date="20240105", accession_number="ACC1")
    mr = write_series(out, modality="MR", slices=8, rows=64, columns=64, patient_id="DW2", patient_name="Doe^Jane", seed=12,
                      study_date="20230310")
    source = write_series(out / "src", modality="CT", slices=3, rows=64, columns=64, patient_id="DW3", patient_name="Roe^Richard",
                          seed=13, study_date="20220101")
    jls_dir = out / "jls"
    jls_dir.mkdir()
    jls_paths = [compress(p, jls_dir / p.name, "jpeg-ls") for p in source.paths]
    jls = SeriesFiles(source.patient_id, source.study_uid, source.series_uid, "CT", jls_paths, source.sop_uids)
    multiframe = write_multiframe_sc(out / "mf", mr, frames=5, rows=32, columns=32)
    for directory in (Path(ct.paths[0]).parent, Path(ct2.paths[0]).parent, Path(mr.paths[0]).parent, jls_dir, Path(multiframe.paths[0]).parent):
        subprocess.run(["dcmsend", "127.0.0.1", str(vireo.dicom_port), "--scan-directories", "--decompress-never", "--call", "DWTEST", str(directory)],
                       check=True, capture_output=True, timeout=60)
    total = 12 + 6 + 8 + 3 + 1
    page = vireo.wait_for_instances(total)
    assert sum(i["instances"] for i in page["items"]) >= total
    return Loaded(ct, ct2, mr, jls, multiframe)


def test_qido_studies_series_instances(vireo: VireoProcess, loaded: Loaded) -> None:
    client = _client(vireo)
    studies = client.search_for_studies()
    by_uid = {s["0020000D"]["Value"][0]: s for s in studies}
    assert {loaded.ct.study_uid, loaded.mr.study_uid, loaded.jls.study_uid} <= set(by_uid)
    ct_study = by_uid[loaded.ct.study_uid]
    assert ct_study["00100010"]["Value"][0]["Alphabetic"] == "Müller^Hans"
    assert ct_study["00080061"]["Value"] == ["CT"]  # ModalitiesInStudy, always with a Value array
    assert ct_study["00201206"]["Value"] == [2]  # NumberOfStudyRelatedSeries
    assert ct_study["00201208"]["Value"] == [18]  # NumberOfStudyRelatedInstances
    assert ct_study["00080050"]["Value"] == ["ACC1"]
    assert ct_study["00081190"]["Value"][0].endswith(f"/dicomweb/studies/{loaded.ct.study_uid}")
    mr_study = by_uid[loaded.mr.study_uid]
    assert set(mr_study["00080061"]["Value"]) == {"MR", "OT"}  # the multi-frame SC joined the MR study

    # Attribute matching: exact, wildcard, date range, UID list, tags as names, fuzzy names.
    assert [s["0020000D"]["Value"][0] for s in client.search_for_studies(search_filters={"PatientID": "DW2"})] == [loaded.mr.study_uid]
    assert {s["0020000D"]["Value"][0] for s in client.search_for_studies(search_filters={"PatientID": "DW*"})} == {
        loaded.ct.study_uid, loaded.mr.study_uid, loaded.jls.study_uid}
    in_range = client.search_for_studies(search_filters={"StudyDate": "20230101-20231231"})
    assert [s["0020000D"]["Value"][0] for s in in_range] == [loaded.mr.study_uid]
    since = {s["0020000D"]["Value"][0] for s in client.search_for_studies(search_filters={"StudyDate": "20230101-"})}
    assert since == {loaded.ct.study_uid, loaded.mr.study_uid}
    listed = client.search_for_studies(search_filters={"StudyInstanceUID": f"{loaded.ct.study_uid}\\{loaded.jls.study_uid}"})
    assert {s["0020000D"]["Value"][0] for s in listed} == {loaded.ct.study_uid, loaded.jls.study_uid}
    assert [s["0020000D"]["Value"][0] for s in client.search_for_studies(search_filters={"00100020": "DW3"})] == [loaded.jls.study_uid]
    assert client.search_for_studies(search_filters={"PatientName": "hans"}) == []
    fuzzy = client.search_for_studies(search_filters={"PatientName": "hans"}, fuzzymatching=True)
    assert [s["0020000D"]["Value"][0] for s in fuzzy] == [loaded.ct.study_uid]
    assert [s["0020000D"]["Value"][0] for s in client.search_for_studies(search_filters={"PatientName": "doe*"})] == [loaded.mr.study_uid]
    assert [s["0020000D"]["Value"][0] for s in client.search_for_studies(search_filters={"ModalitiesInStudy": "OT"})] == [loaded.mr.study_uid]

    # Paging and includefield
    first = client.search_for_studies(limit=2, offset=0)
    second = client.search_for_studies(limit=2, offset=2)
    assert len(first) == 2 and len(second) >= 1
    assert not {s["0020000D"]["Value"][0] for s in first} & {s["0020000D"]["Value"][0] for s in second}
    with_field = client.search_for_studies(search_filters={"PatientID": "DW1"}, fields=["PatientAge", "00081030"])
    assert "00101010" in with_field[0] and "00081030" in with_field[0]
    everything = client.search_for_studies(search_filters={"PatientID": "DW1"}, get_remaining=False, fields=["all"])
    assert "00080020" in everything[0] and "00100040" in everything[0]

    # Series: in a study, across studies (with study attributes), matching on series attributes
    series = client.search_for_series(loaded.ct.study_uid)
    assert [s["0020000E"]["Value"][0] for s in series] == [loaded.ct.series_uid, loaded.ct2.series_uid]
    assert series[1]["0008103E"]["Value"] == ["Lung 1mm"] and series[1]["00201209"]["Value"] == [6]
    assert series[0]["00200011"]["Value"] == [1] and series[0]["00080060"]["Value"] == ["CT"]
    mr_series = client.search_for_series(search_filters={"Modality": "MR"})
    assert [s["0020000E"]["Value"][0] for s in mr_series] == [loaded.mr.series_uid]
    assert mr_series[0]["00100020"]["Value"] == ["DW2"]  # study-level attributes in an all-series search
    assert {s["0020000E"]["Value"][0] for s in client.search_for_series(search_filters={"SeriesDescription": "Lung*"})} == {loaded.ct2.series_uid}
    with vireo.client() as http:
        repeated = http.get("/dicomweb/series", params=[("Modality", "MR"), ("Modality", "OT")]).json()
    assert {s["0020000E"]["Value"][0] for s in repeated} == {loaded.mr.series_uid, loaded.multiframe.series_uid}
    assert {s["0020000E"]["Value"][0] for s in client.search_for_series(search_filters={"Modality": "CT\\OT"})} >= {
        loaded.ct.series_uid, loaded.multiframe.series_uid}

    # Instances
    instances = client.search_for_instances(loaded.ct.study_uid, loaded.ct.series_uid)
    assert [i["00080018"]["Value"][0] for i in instances] == loaded.ct.sop_uids
    assert instances[0]["00280010"]["Value"] == [64] and instances[0]["00200013"]["Value"] == [1]
    assert instances[0]["00081190"]["Value"][0].endswith(f"/instances/{loaded.ct.sop_uids[0]}")
    one = client.search_for_instances(loaded.ct.study_uid, search_filters={"SOPInstanceUID": loaded.ct.sop_uids[3]})
    assert [i["00080018"]["Value"][0] for i in one] == [loaded.ct.sop_uids[3]]
    frames = client.search_for_instances(search_filters={"SeriesInstanceUID": loaded.multiframe.series_uid})
    assert frames[0]["00280008"]["Value"] == [5]


def test_qido_bad_requests(vireo: VireoProcess, loaded: Loaded) -> None:
    with vireo.client() as http:
        unknown = http.get("/dicomweb/studies", params={"NoSuchAttribute": "x"})
        assert unknown.status_code == 400 and "NoSuchAttribute" in unknown.json()["detail"]
        assert http.get("/dicomweb/studies", params={"limit": "many"}).status_code == 400
        assert http.get("/dicomweb/studies/not-a-uid/series").status_code == 400
        assert http.get("/dicomweb/studies", params={"NumberOfFrames": "x"}).status_code in (200, 400)
        empty = http.get("/dicomweb/studies", params={"PatientID": "NOBODY"})
        assert empty.status_code == 200 and empty.json() == []
        more = http.get("/dicomweb/studies", params={"limit": "1"})
        assert len(more.json()) == 1 and "additional results" in more.headers["warning"]
    assert httpx.get(f"{vireo.url}/dicomweb/studies").status_code == 401


def test_wado_metadata_from_the_index(vireo: VireoProcess, loaded: Loaded) -> None:
    client = _client(vireo)
    metadata = client.retrieve_series_metadata(loaded.ct.study_uid, loaded.ct.series_uid)
    assert [m["00080018"]["Value"][0] for m in metadata] == loaded.ct.sop_uids
    first = metadata[0]
    for tag in ("0020000D", "0020000E", "00080016", "00080060", "00280004", "00280010", "00280011", "00280103", "00280100",
                "00280030", "00281052", "00281053", "00281050", "00281051", "00200013", "00200032", "00200037", "00200052"):
        assert tag in first, tag
    # dicomweb-client sends its Host header without the port: the URI still names the port this Vireo serves on
    pixel_uri = first["7FE00010"]["BulkDataURI"]
    assert pixel_uri == f"{vireo.url}/dicomweb/studies/{loaded.ct.study_uid}/series/{loaded.ct.series_uid}/instances/{loaded.ct.sop_uids[0]}/bulkdata/7FE00010"
    assert "InlineBinary" not in str(first["7FE00010"])
    study = client.retrieve_study_metadata(loaded.mr.study_uid)
    assert len(study) == 8 + 1
    instance = client.retrieve_instance_metadata(loaded.ct.study_uid, loaded.ct.series_uid, loaded.ct.sop_uids[2])
    assert instance["00080018"]["Value"] == [loaded.ct.sop_uids[2]]
    # Its BulkDataURI answers with the pixel data bytes
    bulk = client.retrieve_bulkdata(pixel_uri)
    reference = dcmread(loaded.ct.paths[0])
    assert bulk[0] == reference.PixelData
    with vireo.client() as http:
        assert http.get(f"/dicomweb/studies/{loaded.ct.study_uid}/series/1.2.3/metadata").status_code == 404
        assert http.get(f"/dicomweb/studies/{loaded.ct.study_uid}/metadata", headers={"Accept": "application/dicom+xml"}).status_code == 406


def test_wado_instances_as_stored_and_transcoded(vireo: VireoProcess, loaded: Loaded) -> None:
    client = _client(vireo)
    series = client.retrieve_series(loaded.ct.study_uid, loaded.ct.series_uid, media_types=(("application/dicom", "*"),))
    assert sorted(ds.SOPInstanceUID for ds in series) == sorted(loaded.ct.sop_uids)
    original = dcmread(loaded.ct.paths[0])
    got = next(ds for ds in series if ds.SOPInstanceUID == original.SOPInstanceUID)
    assert got.PixelData == original.PixelData and got.PatientName == original.PatientName
    # JPEG-LS as stored, and decoded when the client takes Explicit VR Little Endian only (the default)
    stored = client.retrieve_instance(loaded.jls.study_uid, loaded.jls.series_uid, loaded.jls.sop_uids[0], media_types=(("application/dicom", "*"),))
    assert stored.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.80"
    decoded = client.retrieve_instance(loaded.jls.study_uid, loaded.jls.series_uid, loaded.jls.sop_uids[0],
                                      media_types=(("application/dicom", "1.2.840.10008.1.2.1"),))
    assert decoded.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert np.array_equal(decoded.pixel_array, stored.pixel_array)
    study = client.retrieve_study(loaded.mr.study_uid)
    assert len(study) == 9
    with vireo.client() as http:
        default = http.get(f"/dicomweb/studies/{loaded.jls.study_uid}", headers={"Accept": 'multipart/related; type="application/dicom"'})
        assert default.status_code == 200 and b"transfer-syntax=1.2.840.10008.1.2.1\r\n" in default.content  # PS3.18's default syntax
        fallback = http.get(f"/dicomweb/studies/{loaded.ct.study_uid}", headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'})
        assert fallback.status_code == 200 and b"transfer-syntax=1.2.840.10008.1.2.1\r\n" in fallback.content  # Vireo does not compress: the default
        assert http.get(f"/dicomweb/studies/{loaded.ct.study_uid}/series/{loaded.ct.series_uid}/instances/1.2.3").status_code == 404


def test_wado_frames(vireo: VireoProcess, loaded: Loaded) -> None:
    client = _client(vireo)
    original = dcmread(loaded.ct.paths[1])
    frame = client.retrieve_instance_frames(loaded.ct.study_uid, loaded.ct.series_uid, loaded.ct.sop_uids[1], frame_numbers=[1])
    assert frame[0] == original.PixelData
    mf = dcmread(loaded.multiframe.paths[0])
    size = 32 * 32 * 2
    frames = client.retrieve_instance_frames(loaded.multiframe.study_uid, loaded.multiframe.series_uid, loaded.multiframe.sop_uids[0], frame_numbers=[2, 5])
    assert frames == [mf.PixelData[size : 2 * size], mf.PixelData[4 * size : 5 * size]]
    # Compressed frames: as stored (image/jls) when asked with transfer-syntax=*, else decoded
    jls_source = dcmread(loaded.jls.paths[0])
    raw = client.retrieve_instance_frames(loaded.jls.study_uid, loaded.jls.series_uid, loaded.jls.sop_uids[0], frame_numbers=[1],
                                          media_types=(("image/jls", "1.2.840.10008.1.2.4.80"),))
    assert raw[0][:2] == b"\xff\xd8"  # a JPEG-LS codestream
    plain = client.retrieve_instance_frames(loaded.jls.study_uid, loaded.jls.series_uid, loaded.jls.sop_uids[0], frame_numbers=[1])
    assert np.array_equal(np.frombuffer(plain[0], dtype=jls_source.pixel_array.dtype).reshape(64, 64), jls_source.pixel_array)
    with vireo.client() as http:
        any_syntax = http.get(f"/dicomweb/studies/{loaded.jls.study_uid}/series/{loaded.jls.series_uid}/instances/{loaded.jls.sop_uids[0]}/frames/1",
                              headers={"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"})
        assert any_syntax.status_code == 200 and "transfer-syntax=1.2.840.10008.1.2.4.80" in any_syntax.text[:300]
        missing = http.get(f"/dicomweb/studies/{loaded.ct.study_uid}/series/{loaded.ct.series_uid}/instances/{loaded.ct.sop_uids[1]}/frames/2")
        assert missing.status_code == 404
        assert http.get(f"/dicomweb/studies/{loaded.ct.study_uid}/series/{loaded.ct.series_uid}/instances/{loaded.ct.sop_uids[1]}/frames/0").status_code == 400


def test_rendered_and_thumbnails(vireo: VireoProcess, loaded: Loaded) -> None:
    base = f"/dicomweb/studies/{loaded.ct.study_uid}/series/{loaded.ct.series_uid}/instances/{loaded.ct.sop_uids[6]}"
    with vireo.client() as http:
        jpeg = http.get(f"{base}/rendered")
        assert jpeg.status_code == 200 and jpeg.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(jpeg.content)).size == (64, 64)
        bone = http.get(f"{base}/rendered", params={"window": "300,1500"}, headers={"Accept": "image/png"})
        soft = http.get(f"{base}/rendered", params={"window": "40,80"}, headers={"Accept": "image/png"})
        assert bone.headers["content-type"] == "image/png"
        bone_px, soft_px = np.asarray(Image.open(io.BytesIO(bone.content))), np.asarray(Image.open(io.BytesIO(soft.content)))
        assert bone_px.std() != soft_px.std()  # the window changes the picture
        small = http.get(f"{base}/rendered", params={"viewport": "32,32"})
        assert Image.open(io.BytesIO(small.content)).size == (32, 32)
        frame = http.get(f"/dicomweb/studies/{loaded.multiframe.study_uid}/series/{loaded.multiframe.series_uid}/instances/{loaded.multiframe.sop_uids[0]}/frames/3/rendered")
        assert frame.status_code == 200
        for path in (f"{base}/thumbnail", f"/dicomweb/studies/{loaded.ct.study_uid}/series/{loaded.ct.series_uid}/thumbnail",
                     f"/dicomweb/studies/{loaded.ct.study_uid}/thumbnail"):
            thumb = http.get(path)
            assert thumb.status_code == 200 and thumb.content[:4] == b"\x89PNG", path
        series_rendered = http.get(f"/dicomweb/studies/{loaded.ct2.study_uid}/series/{loaded.ct2.series_uid}/rendered", headers={"Accept": "image/png"})
        assert series_rendered.status_code == 200 and series_rendered.headers["content-type"].startswith("multipart/related")
        assert series_rendered.content.count(b"\x89PNG") == 6  # one image per instance
        assert http.get(f"{base}/rendered", params={"window": "40"}).status_code == 400
        assert http.get(f"{base}/rendered", headers={"Accept": "application/pdf"}).status_code == 406


def test_stow_into_a_dataset(vireo: VireoProcess, tmp_path: Path) -> None:
    client = _client(vireo)
    series = write_series(tmp_path, modality="CT", slices=4, rows=32, columns=32, patient_id="STOW1", seed=21)
    datasets = [dcmread(p) for p in series.paths]
    with vireo.client() as http:
        assert http.post("/api/datasets", json={"name": "stowed", "series": []}).status_code in (200, 201)
    import requests

    session = requests.Session()
    session.auth = vireo.auth
    session.params = {"dataset": "stowed"}  # the dataset the instances join
    result = DICOMwebClient(url=f"{vireo.url}/dicomweb", session=session).store_instances(datasets)
    stored = [item.ReferencedSOPInstanceUID for item in result.ReferencedSOPSequence]
    assert sorted(stored) == sorted(series.sop_uids)
    page = vireo.series(dataset="stowed")
    assert [(i["SeriesInstanceUID"], i["instances"]) for i in page["items"]] == [(series.series_uid, 4)]
    # stored once, searchable at once, retrievable as sent
    assert len(client.search_for_instances(series.study_uid, series.series_uid)) == 4
    again = client.retrieve_instance(series.study_uid, series.series_uid, series.sop_uids[0], media_types=(("application/dicom", "*"),))
    assert again.PixelData == datasets[0].PixelData


def test_stow_failures_are_reported_per_instance(vireo: VireoProcess, tmp_path: Path) -> None:
    series = write_series(tmp_path, modality="MR", slices=2, rows=32, columns=32, patient_id="STOW2", seed=22)
    good = series.paths[0].read_bytes()
    boundary = "b0undary"

    def body(parts: list[bytes]) -> bytes:
        out = b""
        for part in parts:
            out += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
        return out + f"--{boundary}--\r\n".encode()

    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}', "Accept": "application/dicom+json"}
    with vireo.client() as http:
        partly = http.post("/dicomweb/studies", content=body([good, good[: len(good) // 2], b"not dicom at all"]), headers=headers)
        assert partly.status_code == 202
        answer = partly.json()
        assert [i["00081155"]["Value"][0] for i in answer["00081199"]["Value"]] == [series.sop_uids[0]]
        failures = answer["00081198"]["Value"]
        assert len(failures) == 2 and all(f["00081197"]["Value"][0] == 0xC000 for f in failures)
        assert failures[0]["00081155"]["Value"] == [series.sop_uids[0]]  # the truncated copy is named
        wrong_study = http.post("/dicomweb/studies/1.2.3.4", content=body([series.paths[1].read_bytes()]), headers=headers)
        assert wrong_study.status_code == 409
        assert wrong_study.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0xC122]
        assert http.post("/dicomweb/studies", content=b"x", headers={"Content-Type": "application/json"}).status_code == 415
        assert http.post("/dicomweb/studies", content=b"garbage", headers=headers).status_code == 400
        assert http.post("/dicomweb/studies?dataset=a/b", content=body([good]), headers=headers).status_code == 400


def test_stow_of_pixel_data_its_header_contradicts_is_stored_with_a_warning(vireo: VireoProcess, tmp_path: Path) -> None:
    """(issue 14) A whole instance whose NumberOfFrames disagrees with its pixel data is stored, listed with WarningReason 0xB007;
    a cut inside an element header is a failure, never stored."""
    from pydicom.uid import generate_uid

    odd = dcmread(get_testdata_file("MR_small.dcm"))
    odd.StudyInstanceUID, odd.SeriesInstanceUID, odd.PatientID, odd.NumberOfFrames = generate_uid(), generate_uid(), "STOWODD", 3
    odd.SOPInstanceUID = odd.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    out = io.BytesIO()
    odd.save_as(out, enforce_file_format=True)
    cut = dcmread(get_testdata_file("CT_small.dcm"))
    cut.SOPInstanceUID = cut.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    whole = io.BytesIO()
    cut.save_as(whole, enforce_file_format=True)
    cut_bytes = whole.getvalue()[: whole.getvalue().find(b"\x28\x00\x30\x00DS") + 6]
    boundary = "b0undary"
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n" for part in (out.getvalue(), cut_bytes))
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}', "Accept": "application/dicom+json"}
    with vireo.client() as http:
        answer = http.post("/dicomweb/studies", content=body + f"--{boundary}--\r\n".encode(), headers=headers)
        assert answer.status_code == 202
        stored = answer.json()["00081199"]["Value"]
        assert [i["00081155"]["Value"] for i in stored] == [[odd.SOPInstanceUID]]
        assert stored[0]["00081196"]["Value"] == [0xB007]  # WarningReason: Data Set does not match SOP Class
        assert stored[0]["00000902"]["Value"] == ["pixel data 8192 bytes, header needs 24576: 3 frames x 1 samples"]
        failed = answer.json()["00081198"]["Value"]
        assert failed[0]["00081197"]["Value"] == [0xC000] and failed[0]["00081155"]["Value"] == [cut.SOPInstanceUID]
        assert failed[0]["00000902"]["Value"] == ["truncated: ends inside an element header after (0028,0011)"]
        assert http.get(f"/dicomweb/studies/{odd.StudyInstanceUID}/instances").json()[0]["00280008"]["Value"] == [3]
        assert http.get(f"/dicomweb/studies/{cut.StudyInstanceUID}/series/{cut.SeriesInstanceUID}/instances/{cut.SOPInstanceUID}",
                        headers={"Accept": "application/dicom"}).status_code == 404


def test_cors_for_a_viewer_elsewhere(start_vireo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    other = start_vireo(VIREO_CORS_ORIGINS="http://viewer.example")
    preflight = httpx.options(f"{other.url}/dicomweb/studies", headers={
        "Origin": "http://viewer.example", "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://viewer.example"
    answer = httpx.get(f"{other.url}/dicomweb/studies", auth=other.auth, headers={"Origin": "http://viewer.example"})
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "http://viewer.example"
    stranger = httpx.options(f"{other.url}/dicomweb/studies", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in stranger.headers
    api = httpx.get(f"{other.url}/api/series", auth=other.auth, headers={"Origin": "http://viewer.example"})
    assert "access-control-allow-origin" not in api.headers  # only /dicomweb is shared
    assert shutil.which("dcmsend")


def test_links_name_the_address_the_client_used(vireo: VireoProcess, loaded: Loaded) -> None:
    """Without VIREO_PUBLIC_URL: the host name from Host (a browser keeps its origin), the port as served when Host has none."""
    with vireo.client() as http:
        for host, base in ((f"vireo.test:{vireo.http_port}", f"http://vireo.test:{vireo.http_port}"), ("127.0.0.1", vireo.url),
                           ("bad/host", vireo.url)):
            found = http.get("/dicomweb/studies", params={"StudyInstanceUID": loaded.ct.study_uid}, headers={"Host": host}).json()
            assert found[0]["00081190"]["Value"] == [f"{base}/dicomweb/studies/{loaded.ct.study_uid}"], host


def test_links_are_built_on_vireo_public_url(tmp_path: Path) -> None:
    """dicomweb-client on 127.0.0.1 follows BulkDataURIs built on VIREO_PUBLIC_URL (localhost, same non-default port)."""
    process = VireoProcess(tmp_path / "data")
    public = f"http://localhost:{process.http_port}"
    process.extra_env["VIREO_PUBLIC_URL"] = public + "/"
    process.start()
    try:
        original = dcmread(get_testdata_file("CT_small.dcm"))
        boundary = "public-url-test"
        body = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + Path(get_testdata_file("CT_small.dcm")).read_bytes()
        with process.client() as http:
            stow = http.post("/dicomweb/studies", content=body + f"\r\n--{boundary}--\r\n".encode(), headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}', "Accept": "application/dicom+json"})
        assert stow.status_code == 200
        instance_url = f"{public}/dicomweb/studies/{original.StudyInstanceUID}/series/{original.SeriesInstanceUID}/instances/{original.SOPInstanceUID}"
        assert stow.json()["00081199"]["Value"][0]["00081190"]["Value"] == [instance_url]
        client = _client(process)
        [found] = client.search_for_instances(search_filters={"SOPInstanceUID": original.SOPInstanceUID})
        assert found["00081190"]["Value"] == [instance_url]
        metadata = client.retrieve_instance_metadata(original.StudyInstanceUID, original.SeriesInstanceUID, original.SOPInstanceUID)
        pixel_uri = metadata["7FE00010"]["BulkDataURI"]
        assert pixel_uri == f"{instance_url}/bulkdata/7FE00010"
        assert urljoin(f"{process.url}/dicomweb/studies/{original.StudyInstanceUID}/series/{original.SeriesInstanceUID}/", pixel_uri) == pixel_uri
        assert client.retrieve_bulkdata(pixel_uri) == [original.PixelData]
    finally:
        process.kill()


@pytest.mark.parametrize("bad", ["pacs.example.org", "ftp://pacs.example.org", "https://pacs.example.org/?x=1"])
def test_a_public_url_must_be_an_absolute_http_url(bad: str) -> None:
    from app.settings import load_settings

    with pytest.raises(SystemExit, match="VIREO_PUBLIC_URL"):
        load_settings(environ={"VIREO_PUBLIC_URL": bad})
    assert load_settings(environ={"VIREO_PUBLIC_URL": "https://pacs.example.org/vireo/"}).public_base == "https://pacs.example.org/vireo"
