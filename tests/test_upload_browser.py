"""The Data Upload page in real headless Chromium: chunked upload that survives a dropped connection, then an import."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.factories import SeriesFiles
from tests.support.browser import ARTIFACTS_DIR
from tests.support.vireo import VireoProcess
from tests.test_datasets_page import log_in


@pytest.fixture(scope="module")
def upload_vireo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VireoProcess]:
    process = VireoProcess(tmp_path_factory.mktemp("upload-browser") / "data").start()
    yield process
    process.stop()


def test_upload_resumes_after_a_dropped_connection_and_the_import_shows_its_result(  # type: ignore[no-untyped-def]
    upload_vireo: VireoProcess, browser_page, small_study: list[SeriesFiles], tmp_path: Path
) -> None:
    page = browser_page
    log_in(page, upload_vireo, target="/upload")
    page.get_by_text("Drop files or folders here").wait_for()
    page.wait_for_function("window.vireoUpload !== undefined")
    page.evaluate("vireoUpload.chunkSize = 256 * 1024")

    study = tmp_path / "study.zip"
    with zipfile.ZipFile(study, "w") as archive:
        for path in small_study[0].paths:
            archive.write(path, f"ct/{path.name}")
        archive.writestr("readme.txt", "not DICOM")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 5))

    dropped: list[str] = []

    def drop_third_chunk(route) -> None:  # type: ignore[no-untyped-def]
        if route.request.method != "PUT":
            route.continue_()
            return
        puts = getattr(drop_third_chunk, "puts", 0) + 1
        drop_third_chunk.puts = puts  # type: ignore[attr-defined]
        if puts == 3:
            dropped.append(route.request.url)
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/api/uploads/**", drop_third_chunk)
    page.locator("input.upload-files").set_input_files([str(study), str(big)])
    page.locator(".upload-row[data-path='big.bin'][data-state='done']").wait_for(timeout=60000)
    page.locator(".upload-row[data-path='study.zip'][data-state='done']").wait_for(timeout=1000)
    assert dropped, "no chunk was dropped"
    assert (upload_vireo.data_dir / "uploads" / "big.bin").read_bytes() == big.read_bytes()
    assert (upload_vireo.data_dir / "uploads" / "study.zip").read_bytes() == study.read_bytes()
    page.unroute("**/api/uploads/**")
    table = page.locator(".q-table")
    table.get_by_text("big.bin").wait_for()
    table.get_by_text("study.zip").wait_for()

    page.goto(f"{upload_vireo.url}/upload?dag=import-dicoms-in-zip-to-internal-pacs&upload=study.zip")
    page.get_by_label("Dataset name").fill("from-the-page")
    page.get_by_role("button", name="Start import").click()
    page.get_by_text("1 series created (30 instances) in dataset from-the-page").wait_for(timeout=60000)
    page.get_by_text("readme.txt: does not end in .dcm").wait_for()
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS_DIR / "data-upload.png"), full_page=True)

    # delete from the upload area
    page.locator("tr", has_text="big.bin").locator(".upload-delete").click()
    page.get_by_text("Deleted big.bin").wait_for()
    assert not (upload_vireo.data_dir / "uploads" / "big.bin").exists()


def test_files_chosen_before_the_page_is_connected_are_uploaded(upload_vireo: VireoProcess, browser_page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The uploader needs no websocket: a file chosen before the page's connection is up (or with none at all) is sent.

    The page's socket is refused here, so nothing the server would run once connected ever runs;
    an uploader started that way (as it once was) leaves the chosen file unsent.
    """
    page = browser_page
    log_in(page, upload_vireo)
    refused: list[str] = []

    def refuse(route) -> None:  # type: ignore[no-untyped-def]
        refused.append(route.request.url)
        route.abort("connectionrefused")

    def refuse_socket(socket) -> None:  # type: ignore[no-untyped-def]
        refused.append(socket.url)
        socket.close()

    page.route("**/_nicegui_ws/**", refuse)
    page.route_web_socket("**/_nicegui_ws/**", refuse_socket)
    page.goto(f"{upload_vireo.url}/upload")
    page.get_by_text("Drop files or folders here").wait_for()
    early = tmp_path / "early.bin"
    early.write_bytes(os.urandom(70_001))
    page.locator("input.upload-files").set_input_files([str(early)])
    page.locator(".upload-row[data-path='early.bin'][data-state='done']").wait_for(timeout=30000)
    assert refused, "the page's connection was never attempted, so the test proves nothing"
    assert (upload_vireo.data_dir / "uploads" / "early.bin").read_bytes() == early.read_bytes()
    # dropped files go the same way, into the folder typed in the drop zone
    page.locator(".upload-prefix-input").fill("dropped")
    page.evaluate(
        """() => {
            const data = new DataTransfer();
            data.items.add(new File(['dropped on the zone'], 'note.txt'));
            const zone = document.querySelector('.vireo-uploader .upload-drop b');
            zone.dispatchEvent(new DragEvent('dragover', { dataTransfer: data, bubbles: true, cancelable: true }));
            zone.dispatchEvent(new DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true }));
        }"""
    )
    page.locator(".upload-row[data-path='dropped/note.txt'][data-state='done']").wait_for(timeout=30000)
    assert (upload_vireo.data_dir / "uploads" / "dropped" / "note.txt").read_text() == "dropped on the zone"
