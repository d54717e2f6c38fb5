"""The Vireo defects the real OHIF viewer tripped over (issue 16, item 0), each checked against a real Vireo.

* a valid session cookie must never get 401, also in parallel right after NiceGUI has
  pruned and reloads the browser's user storage (every 10 s with no page open);
* a correct Basic password must never get 429, also in parallel right after the credential
  cache expired (its TTL is shortened here with VIREO_CREDENTIAL_CACHE_SECONDS);
* frames and instances fall back to a syntax Vireo can send instead of 406 (PS3.18 8.7.3.5);
* QIDO-RS `fuzzymatching=true` matches text case- and accent-insensitively;
* the SEGs Vireo writes carry a display colour per segment.
"""

from __future__ import annotations

import io
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import highdicom as hd
import httpx
import nibabel as nib
from highdicom.color import CIELabColor
import numpy as np
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.data import get_testdata_file

from app.demo import phantoms as ph
from core import dicom_query
from core.db import Database
from core.pacs_store import PacsStore
from ingest.indexer import IndexWriter
from ingest.intake import Intake, Origin, transfer_syntax_of
from ingest.nifti_convert import NiftiCase, SegInfo, SegLabel, convert_case
from ingest.segment_colours import segment_rgb
from tests.factories import write_series
from tests.security.browser_login import cookie_client, cookies_of, log_in
from tests.support.browser import _playwright_active
from tests.support.vireo import ADMIN_PASSWORD, VireoProcess

CACHE_SECONDS = 0.6
# NiceGUI prunes the user storage of a browser with no open page every 10 s, once it is 10 s old
# (nicegui/app/app.py USER_STORAGE_PRUNE_INTERVAL): bursts over 22 s after login span one prune and reload.
STORAGE_RELOAD_WINDOW = 22.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VireoProcess]:
    process = VireoProcess(tmp_path_factory.mktemp("ohif-defects") / "data", VIREO_CREDENTIAL_CACHE_SECONDS=str(CACHE_SECONDS)).start()
    yield process
    process.stop()


@dataclass
class CookieBursts:
    """Parallel cookie-authenticated requests, burst after burst, in the background while the other tests run."""

    refused: list[tuple[float, str, int]] = field(default_factory=list)
    bursts: int = 0
    started: float = 0.0
    ended: float = 0.0
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def run(self, server: VireoProcess, cookies: dict[str, str]) -> None:
        self.started = time.monotonic()
        try:
            with cookie_client(server, cookies) as client:
                while time.monotonic() - self.started < STORAGE_RELOAD_WINDOW and not self.stop.is_set():
                    answers = _burst(client, ["/dicomweb/studies", "/api/me"] * 10)
                    self.bursts += 1
                    self.refused += [(round(time.monotonic() - self.started, 1), a.request.url.path, a.status_code) for a in answers if a.status_code != 200]
                    time.sleep(0.4)  # a pause without requests: the prune only takes storages no request is using
        finally:
            self.ended = time.monotonic()
            self.done.set()


@pytest.fixture(scope="module", autouse=True)
def cookie_bursts(server: VireoProcess, chromium_browser: Any, request: pytest.FixtureRequest) -> Iterator[CookieBursts]:
    """Logs in through the login page, closes the browser, and fires the bursts for STORAGE_RELOAD_WINDOW seconds.

    Started first (autouse) so that the wait for NiceGUI's prune overlaps the other tests of this module.
    """
    with _playwright_active(request):
        context = chromium_browser.new_context()
        try:
            page = context.new_page()
            log_in(page, server)
            cookies = cookies_of(page)
        finally:
            context.close()  # no Vireo page open from now on: NiceGUI prunes this browser's storage
    bursts = CookieBursts()
    thread = threading.Thread(target=bursts.run, args=(server, cookies), name="cookie-bursts", daemon=True)
    thread.start()
    yield bursts
    bursts.stop.set()
    thread.join(timeout=60)


def _burst(client: httpx.Client, paths: list[str], auth: Any = None) -> list[httpx.Response]:
    with ThreadPoolExecutor(len(paths)) as pool:
        return list(pool.map(lambda path: client.get(path, auth=auth) if auth else client.get(path), paths))


def test_a_correct_basic_password_is_never_throttled_in_parallel(server: VireoProcess) -> None:
    with server.client() as admin:
        assert admin.post("/api/users", json={"username": "olga", "password": "olga-password-1"}).status_code == 201
    with httpx.Client(base_url=server.url, timeout=60) as client:
        # never verified before: twelve at once verify it once
        cold = _burst(client, ["/dicomweb/studies"] * 12, auth=("olga", "olga-password-1"))
        assert [a.status_code for a in cold] == [200] * 12
        for _ in range(2):  # each time right after the cache expired
            time.sleep(CACHE_SECONDS + 0.3)
            answers = _burst(client, ["/dicomweb/studies", "/api/me"] * 6, auth=("admin", ADMIN_PASSWORD))
            assert [(a.status_code, a.headers.get("retry-after")) for a in answers] == [(200, None)] * 12
        # a new password ends the old one at once, remembered or not
        assert olga_works(client, "olga-password-1")
        with server.client() as admin:
            assert admin.put("/api/users/olga", json={"password": "olga-password-2"}).status_code == 200
        assert not olga_works(client, "olga-password-1") and olga_works(client, "olga-password-2")
        time.sleep(CACHE_SECONDS + 0.3)
        assert not olga_works(client, "olga-password-1")


def olga_works(client: httpx.Client, password: str) -> bool:
    answer = client.get("/api/me", auth=("olga", password))
    assert answer.status_code in (200, 401), answer.status_code
    return answer.status_code == 200


def test_wrong_basic_passwords_are_still_throttled(server: VireoProcess) -> None:
    with server.client() as admin:
        assert admin.post("/api/users", json={"username": "mallory", "password": "mallory-password-1"}).status_code == 201
    with httpx.Client(base_url=server.url, timeout=60) as client:
        with ThreadPoolExecutor(8) as pool:
            guesses = list(pool.map(lambda n: client.get("/api/me", auth=("mallory", f"guess-{n}")), range(8)))
        codes = sorted(a.status_code for a in guesses)
        assert set(codes) <= {401, 429} and codes.count(429) >= 3, codes
        assert all(int(a.headers["retry-after"]) > 0 for a in guesses if a.status_code == 429)
        # her right password now waits like any other attempt (it was never verified): no oracle for guessers
        assert client.get("/api/me", auth=("mallory", "mallory-password-1")).status_code == 429
        # and the admin, verified before, is not held up by her failures
        assert client.get("/api/me", auth=("admin", ADMIN_PASSWORD)).status_code == 200


# --------------------------------------------------------------------------- frames and instances: a fallback, not 406

EXPLICIT_LE = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


@pytest.fixture(scope="module")
def stored(server: VireoProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two studies with descriptions to match fuzzily, and a 12-bit JPEG no installed decoder reads."""
    out = tmp_path_factory.mktemp("defects-data")
    brain = write_series(out, modality="MR", slices=2, rows=16, columns=16, patient_id="Q1", patient_name="Doe^John", seed=81,
                         study_description="BRAIN MRI", series_description="Axial T2 Brain")
    bräin = write_series(out, modality="CT", slices=1, rows=16, columns=16, patient_id="Q2", patient_name="Roe^Ann", seed=82,
                         study_description="Bräin perfusion", series_description="Perfusion")
    thorax = write_series(out, modality="CT", slices=1, rows=16, columns=16, patient_id="Q3", patient_name="Poe^Ed", seed=83,
                          study_description="Thorax", series_description="Lung 1mm")
    undecodable = dcmread(get_testdata_file("JPEG-lossy.dcm"))
    datasets = [dcmread(p) for s in (brain, bräin, thorax) for p in s.paths] + [undecodable]
    _dicomweb(server).store_instances(datasets)
    return {"brain": brain, "bräin": bräin, "thorax": thorax, "undecodable": undecodable}


def _dicomweb(server: VireoProcess) -> DICOMwebClient:
    session = requests.Session()
    session.auth = server.auth
    return DICOMwebClient(url=f"{server.url}/dicomweb", session=session)


def _parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    """(Content-Type, content) of each part of a multipart/related answer."""
    boundary = re.search(r'boundary="?([^";]+)"?', response.headers["content-type"])[1].encode()  # type: ignore[index]
    body = response.content[: response.content.rindex(b"--" + boundary + b"--")]
    out = []
    for chunk in body.split(b"--" + boundary + b"\r\n")[1:]:
        head, _, content = chunk.partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        out.append((headers["Content-Type"], content[:-2]))
    return out


def test_frames_and_instances_fall_back_to_what_can_be_sent(server: VireoProcess, stored: dict[str, Any]) -> None:
    ct = stored["thorax"]
    ds = dcmread(ct.paths[0])
    base = f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    with server.client() as http:
        # an uncompressed CT asked for as JPEG (OHIF's requestTransferSyntaxUID): its pixels, uncompressed, and said so
        for accept in (f"multipart/related; type=application/octet-stream; transfer-syntax={JPEG_BASELINE}",
                       f"multipart/related; type=image/jpeg; transfer-syntax={JPEG_BASELINE}"):
            frames = http.get(f"{base}/frames/1", headers={"Accept": accept})
            assert frames.status_code == 200, (accept, frames.status_code, frames.text[:200])
            [(content_type, content)] = _parts(frames)
            assert content_type == f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"
            assert 'type="application/octet-stream"' in frames.headers["content-type"] or "type=application/octet-stream" in frames.headers["content-type"]
            assert content == ds.PixelData
        instance = http.get(base, headers={"Accept": f'multipart/related; type="application/dicom"; transfer-syntax={JPEG_BASELINE}'})
        assert instance.status_code == 200
        [(content_type, content)] = _parts(instance)
        assert content_type == f"application/dicom; transfer-syntax={EXPLICIT_LE}"
        assert dcmread(io.BytesIO(content)).file_meta.TransferSyntaxUID == EXPLICIT_LE
        # a JPEG no decoder here reads: its frame as stored, in its own media type, rather than nothing
        bad = stored["undecodable"]
        bad_base = f"/dicomweb/studies/{bad.StudyInstanceUID}/series/{bad.SeriesInstanceUID}/instances/{bad.SOPInstanceUID}"
        frames = http.get(f"{bad_base}/frames/1", headers={"Accept": "multipart/related; type=application/octet-stream"})
        assert frames.status_code == 200
        [(content_type, content)] = _parts(frames)
        assert content_type == "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.51" and content[:2] == b"\xff\xd8"
        # where PS3.18 gives no other representation, still 406: metadata that is not JSON, instances asked as something else
        assert http.get(f"{base}/metadata", headers={"Accept": "application/dicom+xml"}).status_code == 406
        refused = http.get(bad_base, headers={"Accept": 'multipart/related; type="application/dicom"'})
        assert refused.status_code == 406 and "1.2.840.10008.1.2.4.51" in refused.json()["detail"]


# --------------------------------------------------------------------------- fuzzy matching of texts


def _study_descriptions(items: list[dict[str, Any]]) -> set[str]:
    return {item["00081030"]["Value"][0] for item in items if "00081030" in item}


def test_fuzzy_matching_ignores_case_and_accents_of_texts(server: VireoProcess, stored: dict[str, Any]) -> None:
    client = _dicomweb(server)
    fields = ["StudyDescription"]
    for wanted in ("brain*", "BRÄIN*", "*RAIN*", "br?in*"):
        found = client.search_for_studies(search_filters={"StudyDescription": wanted}, fuzzymatching=True, fields=fields)
        assert _study_descriptions(found) == {"BRAIN MRI", "Bräin perfusion"}, wanted
    assert _study_descriptions(client.search_for_studies(search_filters={"StudyDescription": "brain mri"}, fuzzymatching=True, fields=fields)) == {"BRAIN MRI"}
    # without fuzzy matching: exact and case-sensitive (PS3.4 C.2.2.2.4)
    assert client.search_for_studies(search_filters={"StudyDescription": "brain*"}) == []
    assert _study_descriptions(client.search_for_studies(search_filters={"StudyDescription": "BRAIN*"}, fields=fields)) == {"BRAIN MRI"}
    series = client.search_for_series(search_filters={"SeriesDescription": "*brain"}, fuzzymatching=True)
    assert [s["0008103E"]["Value"][0] for s in series] == ["Axial T2 Brain"]
    assert client.search_for_series(search_filters={"SeriesDescription": "*brain"}) == []
    ids = client.search_for_studies(search_filters={"PatientID": "q2"}, fuzzymatching=True)
    assert [s["00100020"]["Value"][0] for s in ids] == ["Q2"]
    # codes and UIDs keep their exact rules, fuzzy or not
    assert client.search_for_series(search_filters={"Modality": "ct"}, fuzzymatching=True) == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_fuzzy_text_matching_runs_on_both_backends(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The same regex runs as Python's re on SQLite and as `~` on a real PostgreSQL."""
    url = f"sqlite:///{tmp_path / 'vireo.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    database = Database(url)
    database.migrate()
    try:
        out = tmp_path / "series"
        for n, description in enumerate(("BRAIN MRI", "Bräin perfusion", "Thorax\nlow dose")):
            series = write_series(out, slices=1, rows=8, columns=8, patient_id=f"F{n}", seed=90 + n, study_description=description)
            writer = IndexWriter(database)
            writer.start()
            for path in series.paths:
                content = path.read_bytes()
                Intake(PacsStore(tmp_path / "pacs"), writer).ingest(content, transfer_syntax_of(content), Origin())
            writer.stop()

        def found(wanted: str, fuzzy: bool) -> set[str]:
            with database.session() as session:
                result = dicom_query.search(session, dicom_query.Query(level="STUDY", matches={"StudyDescription": wanted}, fuzzy=fuzzy))
            return _study_descriptions(result.items)

        assert found("brain*", True) == {"BRAIN MRI", "Bräin perfusion"}
        assert found("BRAIN*", False) == {"BRAIN MRI"}
        assert found("thorax*DOSE", True) == {"Thorax\nlow dose"}  # `*` crosses the line break of a text
        assert found("[brain]*", True) == set()  # brackets are text, not a class
    finally:
        database.dispose()


# --------------------------------------------------------------------------- SEG colours


def _dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def _display_rgbs(path: Path) -> list[tuple[int, int, int]]:
    """Each segment's RecommendedDisplayCIELabValue as highdicom reads it back, in sRGB."""
    seg = hd.seg.segread(path)
    colours = []
    for number in seg.segment_numbers:
        description = seg.get_segment_description(number)
        assert "RecommendedDisplayCIELabValue" in description, f"segment {number} has no display colour"
        colour = CIELabColor.from_dicom_value(description.RecommendedDisplayCIELabValue)
        colours.append(tuple(int(v) for v in colour.to_rgb()))
    return colours


def _close(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return all(abs(x - y) <= 2 for x, y in zip(a, b))  # CIELab is stored as 16-bit integers: a rounding step


def test_segs_vireo_writes_carry_stable_distinct_colours(tmp_path: Path) -> None:
    volume = ph.ct_torso(1, contrast=False, slices=32, size=64)
    spec = ph.SeriesSpec(ph.Study(ph.Patient("COL-1", "Colour^Test", "F", "19700101"), "col", "20250101", "CT ABDOMEN", "ABDOMEN"), "CT", 2, "Abdomen", contrast=False)
    files = ph.write_series(spec, volume, tmp_path / "ct")
    demo = ph.write_seg(files, volume, spec, 302, tmp_path / "seg")
    # a NIfTI label map of two structures, imported as the NIfTI import does
    ph.write_nifti(volume, tmp_path / "Case01.nii.gz")
    maps = []
    for name in ("liver", "spleen"):
        ph.write_nifti(volume, tmp_path / f"{name}.nii.gz", label=name)
        maps.append(nib.load(tmp_path / f"{name}.nii.gz"))
    combined = np.asarray(maps[0].dataobj, dtype=np.uint8) + 2 * np.asarray(maps[1].dataobj, dtype=np.uint8)
    nib.save(nib.Nifti1Image(combined, maps[0].affine), tmp_path / "labels.nii.gz")
    case = NiftiCase(image=tmp_path / "Case01.nii.gz", label="Case01.nii.gz", case_id="Case01", series_number=1, modality="CT",
                     segmentation=tmp_path / "labels.nii.gz", seg_info=SegInfo([SegLabel(1, "liver"), SegLabel(2, "spleen")], "test-model"))
    imported = convert_case(case, tmp_path / "out").seg_file
    assert imported is not None
    for path in (demo, imported):
        assert _dciodvfy_errors(path) == [], path
        rgbs = _display_rgbs(path)
        assert len(rgbs) >= 2 and len(set(rgbs)) == len(rgbs), rgbs  # distinct within a SEG
        assert all(_close(rgb, segment_rgb(n)) for n, rgb in enumerate(rgbs, start=1)), rgbs  # segment n: the palette's n-th


# --------------------------------------------------------------------------- last: the cookie bursts have run meanwhile


@pytest.mark.slow
def test_a_session_cookie_works_in_parallel_while_the_browser_storage_reloads(cookie_bursts: CookieBursts) -> None:
    assert cookie_bursts.done.wait(STORAGE_RELOAD_WINDOW + 60), "the bursts did not finish"
    # bursts with pauses between them until past the window (their number depends on the machine's load)
    assert cookie_bursts.bursts >= 5 and cookie_bursts.ended - cookie_bursts.started >= STORAGE_RELOAD_WINDOW
    assert cookie_bursts.refused == []
