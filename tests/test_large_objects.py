"""A large stored instance is served without being read whole: frames, the instance itself, metadata and thumbnails.

Real dcmsend into a real Vireo process; the server's peak resident memory (VmHWM, reset through
/proc/PID/clear_refs) is read around the retrievals and compared with the file's size.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydicom import dcmread, dcmwrite
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)

from ingest import wado
from ingest.thumbnails import render_series_thumbnail
from tests.factories import write_multiframe_sc, write_series
from tests.support.large_dicom import write_large_multiframe
from tests.support.vireo import VireoProcess

FRAMES = 572  # 512 x 512 x 2 bytes each: 300 MB
MAX_GROWTH_MB = 100  # the brief's bound; measured: under 10 MB for a 300 MB instance


def _kb(pid: int | str, key: str) -> int:
    """A /proc/PID/status figure in kB (VmRSS, VmHWM); pid may be "self"."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak(pid: int | str) -> int:
    """Reset the process's VmHWM to its current resident size; that size (kB)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _kb(pid, "VmRSS")


def _parts(response: httpx.Response) -> list[bytes]:
    """The contents of a multipart/related answer's parts."""
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    pieces = response.content.split(b"--" + boundary.encode())[1:-1]
    return [piece.split(b"\r\n\r\n", 1)[1][:-2] for piece in pieces]


@pytest.fixture(scope="module")
def large(vireo: VireoProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, object]]:
    source = tmp_path_factory.mktemp("large") / "large.dcm"
    header = write_large_multiframe(source, FRAMES, patient_id="LARGEWADO")
    sent = subprocess.run(["dcmsend", "-v", "127.0.0.1", str(vireo.dicom_port), "--call", "LARGEWADO", str(source)],
                          check=False, capture_output=True, text=True, timeout=300)
    assert "with status SUCCESS  : 1" in sent.stdout + sent.stderr, sent.stdout[-500:] + sent.stderr[-500:]
    yield source, header
    source.unlink()


@pytest.mark.slow  # 300 MB written and sent (~8 s), then read back
def test_a_large_instance_is_retrieved_with_flat_memory(vireo: VireoProcess, large: tuple[Path, object]) -> None:
    source, header = large
    base = f"/dicomweb/studies/{header.StudyInstanceUID}/series/{header.SeriesInstanceUID}/instances/{header.SOPInstanceUID}"  # type: ignore[attr-defined]
    stored = dcmread(source, stop_before_pixels=True)
    offset = source.stat().st_size - FRAMES * 512 * 512 * 2
    pixels = np.memmap(source, dtype="<u2", mode="r", offset=offset, shape=(FRAMES, 512, 512))
    assert vireo.process is not None
    pid = vireo.process.pid
    with vireo.client() as client:
        # Warm-up that reads no file: the first request served in a worker thread grows the process by a
        # malloc arena (~64 MB) whatever it does, which is not what is measured here.
        assert client.get(f"/dicomweb/studies/{stored.StudyInstanceUID}/series").status_code == 200
        baseline = _reset_peak(pid)
        wanted = [1, FRAMES // 2, FRAMES]
        answer = client.get(f"{base}/frames/{','.join(map(str, wanted))}", headers={"Accept": 'multipart/related; type="application/octet-stream"'})
        assert answer.status_code == 200, answer.text[:300]
        assert [bytes(content) == pixels[n - 1].tobytes() for content, n in zip(_parts(answer), wanted, strict=True)] == [True] * 3
        thumbnail = client.get(f"{base}/thumbnail")
        assert thumbnail.status_code == 200 and thumbnail.content.startswith(b"\x89PNG"), thumbnail.text[:300]
        series_thumbnail = client.get(f"/dicomweb/studies/{stored.StudyInstanceUID}/series/{stored.SeriesInstanceUID}/thumbnail")
        assert series_thumbnail.status_code == 200, series_thumbnail.text[:300]
        quick_slice = client.get(f"/api/series/{stored.SeriesInstanceUID}/slices/{FRAMES // 2}")  # the quick viewer's middle frame
        assert quick_slice.status_code == 200 and quick_slice.content.startswith(b"\x89PNG"), quick_slice.text[:300]
        metadata = client.get(f"{base}/metadata")
        assert metadata.status_code == 200 and metadata.json()[0]["00280008"]["Value"] == [FRAMES]
        frames_growth = (_kb(pid, "VmHWM") - baseline) / 1024
        baseline = _reset_peak(pid)
        digest = hashlib.sha256()
        with client.stream("GET", base, headers={"Accept": "application/dicom; transfer-syntax=*"}) as streamed:
            assert streamed.status_code == 200
            assert streamed.headers["content-type"].startswith("application/dicom")
            for chunk in streamed.iter_bytes():
                digest.update(chunk)
        series_url = f"/dicomweb/studies/{stored.StudyInstanceUID}/series/{stored.SeriesInstanceUID}"
        received = 0
        with client.stream("GET", series_url, headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}) as multipart:
            assert multipart.status_code == 200 and multipart.headers["content-type"].startswith("multipart/related")
            for chunk in multipart.iter_bytes():
                received += len(chunk)
        instance_growth = (_kb(pid, "VmHWM") - baseline) / 1024
        assert received > source.stat().st_size  # the one part and its headers
    own = _reset_peak("self")
    assert render_series_thumbnail([source]).startswith(b"\x89PNG")  # what ingest draws for the series browser: the middle frame
    thumbnail_growth = (_kb("self", "VmHWM") - own) / 1024
    assert thumbnail_growth < MAX_GROWTH_MB, f"the series thumbnail of a {FRAMES}-frame instance took {thumbnail_growth:.0f} MB"
    stored_path = vireo.data_dir / "pacs" / stored.StudyInstanceUID / stored.SeriesInstanceUID / f"{stored.SOPInstanceUID}.dcm"
    assert digest.hexdigest() == hashlib.sha256(stored_path.read_bytes()).hexdigest()
    print(f"server growth: frames+thumbnails+slice+metadata {frames_growth:.1f} MB, instance retrieval {instance_growth:.1f} MB;"
          f" series thumbnail in this process {thumbnail_growth:.1f} MB")
    assert frames_growth < MAX_GROWTH_MB, f"frames, thumbnails and metadata grew the server by {frames_growth:.0f} MB"
    assert instance_growth < MAX_GROWTH_MB, f"retrieving the instance grew the server by {instance_growth:.0f} MB"


def test_encapsulated_frames_are_the_stored_fragments(vireo: VireoProcess, tmp_path: Path) -> None:
    ct = write_series(tmp_path, modality="CT", slices=1, rows=32, columns=32, seed=19)
    source = write_multiframe_sc(tmp_path, ct, frames=7, rows=32, columns=32).paths[0]
    ds = dcmread(source)
    ds.PatientID = "LARGERLE"
    ds.compress(RLELossless)
    path = tmp_path / "rle.dcm"
    ds.save_as(path)
    sent = subprocess.run(["dcmsend", "-dn", "127.0.0.1", str(vireo.dicom_port), "--call", "LARGERLE", str(path)],
                          check=False, capture_output=True, text=True, timeout=120)
    assert sent.returncode == 0, sent.stdout[-500:] + sent.stderr[-500:]
    expected = list(generate_frames(dcmread(path).PixelData, number_of_frames=7))
    base = f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    with vireo.client() as client:
        answer = client.get(f"{base}/frames/2,7,4", headers={"Accept": f'multipart/related; type="image/dicom-rle"; transfer-syntax={RLELossless}'})
        assert answer.status_code == 200, answer.text[:300]
        assert _parts(answer) == [expected[1], expected[6], expected[3]]
        decoded = client.get(f"{base}/frames/5", headers={"Accept": 'multipart/related; type="application/octet-stream"'})
        assert _parts(decoded) == [dcmread(path).pixel_array[4].tobytes()]


def test_a_file_past_the_transcode_limit_is_sent_as_stored_not_re_encoded(monkeypatch: pytest.MonkeyPatch) -> None:
    path = Path(get_testdata_file("MR_small_bigendian.dcm"))  # type: ignore[arg-type]
    instance = wado.StoredInstance("1", "2", "3", wado.ExplicitVRBigEndian, path, 1)
    as_stored = wado.instance_content(instance, wado.ExplicitVRBigEndian)
    assert isinstance(as_stored, wado.StoredFile) and b"".join(wado.file_chunks(as_stored)) == path.read_bytes()
    assert wado.instance_content(instance, wado.ExplicitVRLittleEndian) == wado.instance_bytes(instance, wado.ExplicitVRLittleEndian)
    monkeypatch.setattr(wado, "TRANSCODE_LIMIT", path.stat().st_size - 1)
    with pytest.raises(wado.CannotTranscode, match="too large"):
        wado.instance_content(instance, wado.ExplicitVRLittleEndian)


def _whole_value_frames(path: Path) -> list[bytes]:
    """Every frame as the earlier code cut them: the whole Pixel Data value read, swapped to little endian, sliced."""
    ds = dcmread(path)
    element = ds["PixelData"]
    data = wado.swapped(bytes(element.value), wado.pixel_unit(ds, element.VR))
    return [wado._uncompressed_frame(ds, data, i) for i in range(int(ds.get("NumberOfFrames") or 1))]


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "SC_rgb_expb.dcm", "SC_rgb_expb_2frame.dcm", "SC_rgb_expb_16bit_2frame.dcm",
                                  "SC_rgb_expb_32bit_2frame.dcm", "OBXXXX1A_expb_2frame.dcm", "rtdose_expb.dcm"])
def test_big_endian_frames_read_from_the_file_equal_the_whole_value_swapped(name: str) -> None:
    path = Path(get_testdata_file(name))  # type: ignore[arg-type]
    expected = _whole_value_frames(path)
    instance = wado.StoredInstance("1", "2", "3", wado.ExplicitVRBigEndian, path, len(expected))
    got = wado.frames(instance, list(range(1, len(expected) + 1)), wado.ExplicitVRLittleEndian)
    assert [f.content for f in got] == expected


def test_odd_sized_big_endian_frames_that_start_mid_word_are_cut_exactly(tmp_path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRBigEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns, ds.NumberOfFrames, ds.SamplesPerPixel = 33, 33, 3, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.add_new(0x7FE00010, "OW", bytes(np.random.default_rng(19).integers(0, 256, 3 * 33 * 33 + 1, dtype=np.uint8)))
    path = tmp_path / "odd_be.dcm"
    dcmwrite(path, ds, implicit_vr=False, little_endian=False, enforce_file_format=True)
    expected = _whole_value_frames(path)
    assert len(expected[1]) == 33 * 33
    got = wado.frames(wado.StoredInstance("1", "2", "3", ExplicitVRBigEndian, path, 3), [2, 3, 1], ExplicitVRLittleEndian)
    assert [f.content for f in got] == [expected[1], expected[2], expected[0]]


@pytest.mark.parametrize(("name", "syntax"), [("CT_small.dcm", "1.2.840.10008.1.2.1"), ("MR_small_bigendian.dcm", "1.2.840.10008.1.2.2"),
                                              ("image_dfl.dcm", "1.2.840.10008.1.2.1.99"), ("emri_small_RLE.dcm", "1.2.840.10008.1.2.5")])
def test_bulk_pixel_data_read_with_other_values_left_in_the_file_is_the_whole_value(name: str, syntax: str) -> None:
    path = Path(get_testdata_file(name))  # type: ignore[arg-type]
    whole = dcmread(path)
    assert str(whole.file_meta.TransferSyntaxUID) == syntax
    expected = bytes(whole.PixelData)
    if syntax == ExplicitVRBigEndian:
        expected = wado.swapped(expected, wado.pixel_unit(whole, whole["PixelData"].VR))
    value, encapsulated = wado.bulk_value(wado.StoredInstance("1", "2", "3", syntax, path, 1), ["7FE00010"])
    assert (value, encapsulated) == (expected, syntax == "1.2.840.10008.1.2.5")
