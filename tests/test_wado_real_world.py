"""WADO-RS on the files archives really hold: pydicom's and pydicom-data's big-endian, deflated,
JPEG, JPEG-LS, JPEG 2000 and RLE test files, and two that no installed decoder can read.

Each file is stored through STOW-RS as it is and read back with the default Accept (PS3.18's
explicit VR little endian) and with `transfer-syntax=*` (as stored, byte for byte). A
re-encoded file must carry the same values: the big-endian ones are also checked against
the little-endian twins pydicom ships (same image, written little endian by another tool).
What cannot be re-encoded is refused with 406 naming its transfer syntax — never an empty
200 — and a series mixing both answers 206 with the rest.

Several of these files share one SOP Instance UID (pydicom made them from one MR image), so
each stored copy gets its own by replacing the UID's last component with one of the same
length: every other byte stays as the file has it.
"""

from __future__ import annotations

import base64
import io
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from tests.support.vireo import VireoProcess

pytestmark = pytest.mark.timeout(240)

EXPLICIT_LE = "1.2.840.10008.1.2.1"
BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFAULT_ACCEPT = 'multipart/related; type="application/dicom"'
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
# A file system path in an answer: two or more /segments in a row (a media type has one).
PATH_LIKE = re.compile(r"(?:/[\w.@+~-]+){2,}")

# file → its little-endian twin in pydicom's test data (None: no twin)
BIG_ENDIAN_FILES = {
    "MR_small_bigendian.dcm": "MR_small.dcm",
    "SC_rgb_expb_32bit_2frame.dcm": "SC_rgb_32bit_2frame.dcm",
    "rtdose_expb.dcm": "rtdose.dcm",
    "OBXXXX1A_expb_2frame.dcm": "OBXXXX1A_2frame.dcm",  # palette colour: OW lookup tables
    "SC_rgb_small_odd_big_endian.dcm": "SC_rgb_small_odd.dcm",  # an odd number of pixel bytes
    "gdcm-US-ALOKA-16_big.dcm": None,  # segmented palette tables
    "liver_expb.dcm": "liver.dcm",  # multi-frame
}
DECODABLE_FILES = (
    "image_dfl.dcm",  # deflated
    "US1_J2KR.dcm", "693_J2KI.dcm",  # JPEG 2000 lossless (YBR_RCT) and lossy
    "MR_small_jpeg_ls_lossless.dcm", "emri_small_jpeg_ls_lossless.dcm",  # JPEG-LS, one and ten frames
    "MR_small_RLE.dcm", "SC_rgb_rle_32bit_2frame.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, YBR_FULL
    "SC_rgb_jpeg.dcm",  # JPEG baseline whose data set is implicit VR although its header says explicit
    "JPEG-LL.dcm",
)
UNDECODABLE_FILES = {
    "JPEG-lossy.dcm": "1.2.840.10008.1.2.4.51",  # 12-bit JPEG Extended: no installed decoder reads it
    "JPEG2000-embedded-sequence-delimiter.dcm": "1.2.840.10008.1.2.4.91",  # a damaged codestream
}
# Values a decompression rightly changes (pydicom's decoders deliver YBR as RGB, colour-by-pixel).
PIXEL_DESCRIPTION = frozenset({0x00280004, 0x00280006, 0x7FE00010})


@dataclass(frozen=True)
class Stored:
    name: str
    content: bytes  # as sent (the original, its SOP Instance UID made unique where needed)
    study: str
    series: str
    sop: str
    syntax: str

    @property
    def path(self) -> str:
        return f"/dicomweb/studies/{self.study}/series/{self.series}/instances/{self.sop}"


def _own_uid(content: bytes, old: str, serial: int) -> tuple[bytes, str]:
    """`content` with SOP Instance UID `old` replaced by a UID of the same length (so no length field changes)."""
    head, _, last = old.rpartition(".")
    new_last = str(10 ** (len(last) - 1) + serial) if len(last) > 1 else str(serial % 9 + 1)
    new = f"{head}.{new_last}"
    assert len(new) == len(old) and new != old
    return content.replace(old.encode(), new.encode()), new


def _stow(vireo: VireoProcess, contents: list[bytes]) -> httpx.Response:
    boundary = "test-" + secrets.token_hex(8)
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + c + b"\r\n" for c in contents)
    with vireo.client() as http:
        return http.post("/dicomweb/studies", content=body + f"--{boundary}--\r\n".encode(),
                         headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                                  "Accept": "application/dicom+json"})


@pytest.fixture(scope="module")
def stored(vireo: VireoProcess) -> dict[str, Stored]:
    """Every file of the three lists, stored once, by name."""
    names = [*BIG_ENDIAN_FILES, *DECODABLE_FILES, *UNDECODABLE_FILES]
    seen: set[str] = set()
    out: dict[str, Stored] = {}
    for serial, name in enumerate(names, start=1):
        content = Path(get_testdata_file(name)).read_bytes()
        ds = dcmread(io.BytesIO(content), stop_before_pixels=True, force=True)
        sop = str(ds.SOPInstanceUID)
        if sop in seen:
            content, sop = _own_uid(content, sop, serial)
        seen.add(sop)
        out[name] = Stored(name, content, str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), sop, str(ds.file_meta.TransferSyntaxUID))
    answer = _stow(vireo, [s.content for s in out.values()])
    assert answer.status_code == 200, answer.text
    return out


def _parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    """(Content-Type, content) of each part of a multipart/related answer (RFC 2046 framing, read here on its own)."""
    media = response.headers["content-type"]
    assert media.startswith("multipart/related"), media
    boundary = re.search(r'boundary="?([^";]+)"?', media)[1].encode()  # type: ignore[index]
    body = response.content
    assert body.endswith(b"--" + boundary + b"--\r\n"), "the closing delimiter ends the body"
    out = []
    for chunk in body[: body.rindex(b"--" + boundary + b"--")].split(b"--" + boundary + b"\r\n")[1:]:
        head, _, content = chunk.partition(b"\r\n\r\n")
        assert content.endswith(b"\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        out.append((headers["Content-Type"], content[:-2]))
    return out


def _retrieve(vireo: VireoProcess, path: str, accept: str) -> httpx.Response:
    with vireo.client() as http:
        return http.get(path, headers={"Accept": accept})


def _binary_values(element_value: bytes, vr: str, big_endian: bool) -> np.ndarray | bytes:
    """A binary value as numbers in its own byte order, so big- and little-endian copies compare by value."""
    width = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}.get(vr)
    if width is None:
        return element_value
    usable = len(element_value) - len(element_value) % width
    return np.frombuffer(element_value[:usable], dtype=f"{'>' if big_endian else '<'}u{width}")


def _assert_same_values(original: Dataset, got: Dataset, big_endian: bool, skip: frozenset[int] = frozenset()) -> None:
    """Every element of `original` (groups past 0002, retired group lengths aside) has the same value in `got`, nested items too."""
    for element in original:
        if element.tag in skip or element.tag.element == 0:
            continue
        assert element.tag in got, element
        other = got[element.tag]
        if element.VR == "SQ":
            assert len(other.value) == len(element.value), element.tag
            for a, b in zip(element.value, other.value, strict=True):
                _assert_same_values(a, b, big_endian)
        elif isinstance(element.value, bytes):
            mine, theirs = _binary_values(element.value, element.VR, big_endian), _binary_values(other.value, other.VR, False)
            assert np.array_equal(np.asarray(mine), np.asarray(theirs)) if isinstance(mine, np.ndarray) else mine == theirs, element.tag
        else:
            assert other.value == element.value, element.tag


def _single_part(response: httpx.Response) -> tuple[str, Dataset]:
    assert response.status_code == 200, response.text
    parts = _parts(response)
    assert len(parts) == 1 and parts[0][1], "one non-empty part"
    return parts[0][0], dcmread(io.BytesIO(parts[0][1]))


@pytest.mark.parametrize("name", list(BIG_ENDIAN_FILES))
def test_big_endian_is_sent_little_endian_by_default(vireo: VireoProcess, stored: dict[str, Stored], name: str) -> None:
    item = stored[name]
    content_type, got = _single_part(_retrieve(vireo, item.path, DEFAULT_ACCEPT))
    assert f"transfer-syntax={EXPLICIT_LE}" in content_type
    assert got.file_meta.TransferSyntaxUID == EXPLICIT_LE and got.SOPInstanceUID == item.sop
    original = dcmread(io.BytesIO(item.content))
    _assert_same_values(original, got, big_endian=True, skip=frozenset({0x7FE00010}))  # pixels: by value and against the twin
    assert np.array_equal(got.pixel_array, original.pixel_array)
    twin = BIG_ENDIAN_FILES[name]
    if twin:  # the same image written little endian by another tool: the very same bytes
        reference = dcmread(get_testdata_file(twin))
        assert got.PixelData == reference.PixelData
        for keyword in ("RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData"):
            if keyword in reference:
                assert got[keyword].value == reference[keyword].value


@pytest.mark.parametrize("name", list(DECODABLE_FILES))
def test_compressed_and_deflated_are_decoded_by_default(vireo: VireoProcess, stored: dict[str, Stored], name: str) -> None:
    item = stored[name]
    content_type, got = _single_part(_retrieve(vireo, item.path, DEFAULT_ACCEPT))
    assert f"transfer-syntax={EXPLICIT_LE}" in content_type and got.file_meta.TransferSyntaxUID == EXPLICIT_LE
    original = dcmread(io.BytesIO(item.content))
    _assert_same_values(original, got, big_endian=False, skip=PIXEL_DESCRIPTION)
    assert np.array_equal(got.pixel_array, original.pixel_array)  # pydicom's own decoding of the stored file


@pytest.mark.parametrize("name", [*BIG_ENDIAN_FILES, *DECODABLE_FILES, *UNDECODABLE_FILES])
def test_any_syntax_is_the_stored_file_byte_for_byte(vireo: VireoProcess, stored: dict[str, Stored], name: str) -> None:
    item = stored[name]
    response = _retrieve(vireo, item.path, AS_STORED)
    assert response.status_code == 200
    [(content_type, content)] = _parts(response)
    assert f"transfer-syntax={item.syntax}" in content_type
    assert content == item.content


@pytest.mark.parametrize("name", list(UNDECODABLE_FILES))
def test_undecodable_is_refused_with_its_syntax_or_sent_as_stored(vireo: VireoProcess, stored: dict[str, Stored], name: str) -> None:
    item, syntax = stored[name], UNDECODABLE_FILES[name]
    for accept in (DEFAULT_ACCEPT, "application/dicom"):
        refused = _retrieve(vireo, item.path, accept)
        assert refused.status_code == 406, (accept, refused.status_code)
        assert syntax in refused.text and not PATH_LIKE.search(refused.text), refused.text
    # Listing the stored syntax (or *) after the default lets it come as stored
    either = _retrieve(vireo, item.path, f"{DEFAULT_ACCEPT}; transfer-syntax={EXPLICIT_LE}, {DEFAULT_ACCEPT}; transfer-syntax={syntax}; q=0.5")
    assert either.status_code == 200 and _parts(either)[0][1] == item.content
    with vireo.client() as http:
        for what in ("rendered", "thumbnail", "frames/1/rendered"):
            answer = http.get(f"{item.path}/{what}")
            assert answer.status_code == 422, (what, answer.status_code)
            assert syntax in answer.text and not PATH_LIKE.search(answer.text), answer.text
        frames = http.get(f"{item.path}/frames/1", headers={"Accept": "multipart/related; type=application/octet-stream"})
        # frames fall back to the stored syntax (PS3.18), and the part says which it is
        assert frames.status_code == 200, frames.status_code
        assert f"transfer-syntax={syntax}" in _parts(frames)[0][0]


def test_a_series_mixing_both_answers_206_with_what_it_can(vireo: VireoProcess, stored: dict[str, Stored]) -> None:
    """JPEG-LL and the two undecodable files share one series: those two are left out of a default retrieve, and said so."""
    mr = stored["JPEG-LL.dcm"]
    members = {s.sop: s for s in stored.values() if s.series == mr.series}
    undecodable = {stored[n].sop for n in UNDECODABLE_FILES}
    assert undecodable < set(members) and len(members) == 3
    series_path = f"/dicomweb/studies/{mr.study}/series/{mr.series}"
    partial = _retrieve(vireo, series_path, DEFAULT_ACCEPT)
    assert partial.status_code == 206
    warning = partial.headers["warning"]
    assert f"2 of {len(members)} instances" in warning and any(syntax in warning for syntax in UNDECODABLE_FILES.values()), warning
    sent = [dcmread(io.BytesIO(content)) for _, content in _parts(partial)]
    assert {ds.SOPInstanceUID for ds in sent} == set(members) - undecodable
    assert {ds.file_meta.TransferSyntaxUID for ds in sent} == {EXPLICIT_LE}
    whole = _retrieve(vireo, series_path, AS_STORED)
    assert whole.status_code == 200
    assert sorted(content for _, content in _parts(whole)) == sorted(s.content for s in members.values())


def test_dicomweb_client_reads_big_endian_frames_and_bulk_data_little_endian(vireo: VireoProcess, stored: dict[str, Stored]) -> None:
    session = requests.Session()
    session.auth = vireo.auth
    client = DICOMwebClient(url=f"{vireo.url}/dicomweb", session=session)
    item = stored["SC_rgb_expb_32bit_2frame.dcm"]
    twin = dcmread(get_testdata_file("SC_rgb_32bit_2frame.dcm"))
    ds = client.retrieve_instance(item.study, item.series, item.sop, media_types=(("application/dicom", EXPLICIT_LE),))
    assert ds.file_meta.TransferSyntaxUID == EXPLICIT_LE and ds.PixelData == twin.PixelData
    size = len(twin.PixelData) // 2
    assert client.retrieve_instance_frames(item.study, item.series, item.sop, frame_numbers=[2]) == [twin.PixelData[size:]]
    metadata = client.retrieve_instance_metadata(item.study, item.series, item.sop)
    assert client.retrieve_bulkdata(metadata["7FE00010"]["BulkDataURI"]) == [twin.PixelData]


def test_the_quick_viewer_says_why_a_slice_cannot_be_shown(vireo: VireoProcess, stored: dict[str, Stored]) -> None:
    """The same series in the Datasets page's viewer: undecodable slices answer 422 naming their syntax, the others a PNG."""
    series = stored["JPEG-LL.dcm"].series
    with vireo.client() as http:
        answers = [http.get(f"/api/series/{series}/slices/{index}") for index in range(3)]
    assert sorted(a.status_code for a in answers) == [200, 422, 422]
    for answer in answers:
        if answer.status_code == 422:
            assert any(s in answer.text for s in UNDECODABLE_FILES.values()) and not PATH_LIKE.search(answer.text), answer.text
        else:
            assert answer.content[:4] == b"\x89PNG"


def test_metadata_of_big_endian_carries_inline_binary_little_endian(vireo: VireoProcess, stored: dict[str, Stored]) -> None:
    """DICOM JSON has no transfer syntax: the palette tables of the big-endian file read as those of its little-endian twin."""
    item = stored["OBXXXX1A_expb_2frame.dcm"]
    twin = dcmread(get_testdata_file("OBXXXX1A_2frame.dcm"))
    with vireo.client() as http:
        [metadata] = http.get(f"{item.path}/metadata").json()
    for keyword in ("RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData"):
        tag = f"{twin[keyword].tag:08X}"
        assert base64.b64decode(metadata[tag]["InlineBinary"]) == twin[keyword].value, keyword


# --------------------------------------------------------------------------- SEG masks, float pixels, waveforms


@pytest.fixture(scope="module")
def odd_objects(vireo: VireoProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Dataset]:
    """An odd-sized (17×23) CT with its highdicom SEG, Float and Double Float parametric maps and pydicom's ECG, stored by STOW-RS.

    17×23 = 391 bits a SEG frame: frame N starts in the middle of a byte, as in the SEGs Vireo's own NIfTI import writes.
    """
    from pydicom.uid import generate_uid

    from tests.factories import write_seg, write_series

    out = tmp_path_factory.mktemp("odd-objects")
    ct = write_series(out, modality="CT", slices=5, rows=17, columns=23, seed=14, patient_id="ODD14", pixel_spacing=(0.8, 0.8))
    seg_path = write_seg(out, ct, labels={1: "liver", 2: "kidney"}, frames=5)
    objects = {"seg": dcmread(seg_path), "ecg": dcmread(get_testdata_file("waveform_ecg.dcm"))}
    for name, keyword, dtype in (("float", "FloatPixelData", np.float32), ("double", "DoubleFloatPixelData", np.float64)):
        ds = dcmread(ct.paths[0])
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        del ds.PixelData, ds.PixelRepresentation, ds.BitsStored, ds.HighBit
        ds.BitsAllocated, ds.NumberOfFrames = np.dtype(dtype).itemsize * 8, 3
        setattr(ds, keyword, (np.arange(3 * 17 * 23, dtype=dtype).reshape(3, 17, 23) / 7 - 100).tobytes())
        objects[name] = ds
    contents: list[bytes] = []
    for ds in [*(dcmread(p) for p in ct.paths), *objects.values()]:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=False)
        contents.append(buffer.getvalue())
    answer = _stow(vireo, contents)
    assert answer.status_code == 200, answer.text
    return objects


def _instance_path(ds: Dataset) -> str:
    return f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def test_every_frame_of_an_odd_sized_seg_renders_as_its_mask(vireo: VireoProcess, odd_objects: dict[str, Dataset]) -> None:
    """1-bit frames follow each other with no padding (PS3.5 8.1.1): each /rendered frame is that frame's mask, in white."""
    from PIL import Image

    seg = odd_objects["seg"]
    masks = seg.pixel_array  # pydicom unpacks the whole value right; only its per-frame reading assumes byte-aligned frames
    assert len(masks) >= 3 and (seg.Rows * seg.Columns) % 8
    with vireo.client() as http:
        for number, mask in enumerate(masks, start=1):
            answer = http.get(f"{_instance_path(seg)}/frames/{number}/rendered", headers={"Accept": "image/png"})
            assert answer.status_code == 200, (number, answer.text)
            image = np.asarray(Image.open(io.BytesIO(answer.content)).convert("L"))
            assert image.shape == mask.shape and np.array_equal(image > 127, mask.astype(bool)), number


def test_the_thumbnail_of_an_odd_sized_seg_is_drawn(vireo: VireoProcess, odd_objects: dict[str, Dataset]) -> None:
    """The Datasets page's thumbnail of the SEG shows its segments in colour, not the "no preview" card a failure leaves."""
    import time

    from PIL import Image

    from ingest.thumbnails import placeholder_thumbnail

    seg = odd_objects["seg"]
    cards = {placeholder_thumbnail("thumbnail follows"), placeholder_thumbnail("SEG · no preview")}
    deadline = time.monotonic() + 60
    with vireo.client() as http:
        while True:
            answer = http.get(f"/api/series/{seg.SeriesInstanceUID}/thumbnail")
            assert answer.status_code == 200, answer.text
            if answer.content != placeholder_thumbnail("thumbnail follows") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert answer.content not in cards
    rgb = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB")).astype(int)
    assert (np.ptp(rgb, axis=-1) > 60).any(), "a segment colour is drawn"


@pytest.mark.parametrize(("name", "dtype"), [("float", "<f4"), ("double", "<f8")])
def test_float_pixel_data_frames_are_served_little_endian(vireo: VireoProcess, odd_objects: dict[str, Dataset], name: str, dtype: str) -> None:
    """PS3.18 frame retrieval covers Float and Double Float Pixel Data, as /metadata's BulkDataURI does."""
    ds = odd_objects[name]
    values = np.frombuffer(ds.FloatPixelData if name == "float" else ds.DoubleFloatPixelData, dtype=dtype).reshape(3, 17, 23)
    answer = _retrieve(vireo, f"{_instance_path(ds)}/frames/3,1", "multipart/related; type=application/octet-stream")
    assert answer.status_code == 200, answer.text
    parts = _parts(answer)
    assert [media.split(";")[0] for media, _ in parts] == ["application/octet-stream"] * 2
    assert np.array_equal(np.frombuffer(parts[0][1], dtype=dtype).reshape(17, 23), values[2])
    assert np.array_equal(np.frombuffer(parts[1][1], dtype=dtype).reshape(17, 23), values[0])
    missing = _retrieve(vireo, f"{_instance_path(ds)}/frames/4", "multipart/related; type=application/octet-stream")
    assert missing.status_code == 404


def test_a_waveform_has_no_rendered_image(vireo: VireoProcess, odd_objects: dict[str, Dataset]) -> None:
    """/rendered is the instance's image: an ECG has none, so 422 says so (no placeholder card); its thumbnail may be the card."""
    path = _instance_path(odd_objects["ecg"])
    with vireo.client() as http:
        for what in ("rendered", "frames/1/rendered"):
            answer = http.get(f"{path}/{what}", headers={"Accept": "image/png"})
            assert answer.status_code == 422, (what, answer.status_code)
            assert "this instance has no image to render (12-lead ECG Waveform)" in answer.text and not PATH_LIKE.search(answer.text)
        assert http.get(f"{path}/thumbnail", headers={"Accept": "image/png"}).status_code == 200
