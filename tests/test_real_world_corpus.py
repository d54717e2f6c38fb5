"""Issue 14's corpus test: every DICOM file shipped in pydicom and pydicom-data, sent the way users send.

The whole corpus goes to one Vireo in ONE dcmsend association (it must never be aborted, and
every file gets a status), and file by file with pynetdicom, byte for byte
(STORE_SEND_CHUNKED_DATASET), into fresh Vireos: the test files hold one image in many
encodings under one SOP Instance UID, and a PACS keeps the first instance of a UID, so the
k-th file of a UID goes to the k-th Vireo. For every file the table records the C-STORE
status, whether it is stored and indexed, its series thumbnail, `/rendered` of frame 1, and
WADO-RS retrieve with the default Accept and with `transfer-syntax=*`.

The expected table lives in tests/corpus_expected.py (one line per file), so a regression
names its file. Regenerate it, after a change that is meant to change it, with

    VIREO_CORPUS_WRITE_EXPECTED=1 .venv/bin/python -m pytest tests/test_real_world_corpus.py -q

(or `bench/corpus_table.py --write-expected`, which also prints the table as markdown).
"""

from __future__ import annotations

import os
import re

import pydicom
import pytest

from tests.support import corpus as c

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# Files that carry their four UIDs and still may be refused, and why: their content is broken in a
# way no receiver can store whole. Everything else that carries its UIDs must be stored.
MAY_BE_REFUSED: dict[str, str] = {
    "pydicom/test_files/rtplan_truncated.dcm": "cut off inside a sequence",
    "pydicom/test_files/MR_truncated.dcm": "pixel data shorter than its declared length",
    "pydicom-data/emri_small_jpeg_2k_lossless_too_short.dcm": "pixel data cut off before its sequence delimiter",
    "pydicom/test_files/badVR.dcm": "NumberOfFrames '1A' is not a number: the pixel data cannot be cut into frames",
}


MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR: a file set's index, not an instance to store


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> c.CorpusRun:
    result = c.run_corpus(tmp_path_factory.mktemp("corpus"))
    if os.environ.get("VIREO_CORPUS_WRITE_EXPECTED"):
        c.write_expected(result.rows())
    return result


def _stored(row: dict[str, str]) -> bool:
    return row["cstore"] == "0x0000" or row["cstore"].startswith("0xB")


def test_the_corpus_is_every_dicom_file_of_both_packages() -> None:
    files = c.corpus()
    names = [f.name for f in files]
    assert len(files) >= 250 and len(set(names)) == len(names) == len({f.sha256 for f in files})
    assert names == sorted(names)
    assert {"pydicom/test_files/CT_small.dcm", "pydicom/charset_files/chrH31.dcm", "pydicom/palettes/spring.dcm",
            "pydicom-data/693_J2KR.dcm"} <= set(names)
    # Raw data sets without preamble and meta stay in; JSON, dumps, READMEs, the ICC profile and the gzip do not.
    assert {"pydicom/test_files/ExplVR_BigEndNoMeta.dcm", "pydicom/test_files/rtstruct.dcm"} <= {f.name for f in files if not f.part10}
    assert not any(n.endswith((".json", ".txt", ".dump", ".md", ".icc", ".gz")) for n in names)


def test_every_file_has_the_expected_row(run: c.CorpusRun) -> None:
    if os.environ.get("VIREO_CORPUS_WRITE_EXPECTED"):
        pytest.skip("the expected table was just rewritten from this run: review its diff")
    expected = c.load_expected()
    if expected is None:
        pytest.fail("tests/corpus_expected.py is missing: run with VIREO_CORPUS_WRITE_EXPECTED=1 to write it")
    diff = c.differences(expected, run.rows(), run.results)
    assert not diff, f"{len(diff)} of {len(run.results)} files differ from tests/corpus_expected.py:\n" + "\n".join(diff)


def test_dcmsend_sends_the_whole_corpus_in_one_association_and_every_file_gets_a_status(run: c.CorpusRun) -> None:
    summary = run.dcmsend_summary
    assert summary["associations"] == 1, summary
    assert not summary["aborted"], "the association was aborted:\n" + run.dcmsend_log[-3000:]
    # dcmsend itself declines to read some files (DICOMDIRs, files it cannot parse): those never reach Vireo.
    # Every file it did send was answered with a status.
    unanswered = {n: (r.row["dcmsend"], r.notes.get("dcmsend", "")) for n, r in run.results.items()
                  if r.row["dcmsend"] in ("not sent", "absent")}
    assert not unanswered, f"{len(unanswered)} files got no status from Vireo: {unanswered}"


def _meta_disagrees(f: c.CorpusFile) -> bool:
    """Whether a file's meta header names another SOP Instance UID than its data set does.

    Sent byte for byte, such a file's C-STORE announces the header's UID (pynetdicom takes it
    from there) while the data set says another: the request and the data set disagree, and
    the standard's answer is 0xA900, as DCMTK's storescp gives too. dcmsend announces the data
    set's own UID, so sent that way the file must be stored.
    """
    if not f.part10:
        return False
    ds = pydicom.dcmread(f.path, stop_before_pixels=True, force=True)
    header = str(ds.file_meta.get("MediaStorageSOPInstanceUID", "")).strip("\x00 ")
    return bool(header) and header != str(ds.get("SOPInstanceUID", "")).strip("\x00 ")


def test_every_file_that_carries_its_uids_is_stored(run: c.CorpusRun) -> None:
    files = {f.name: f for f in c.corpus()}
    refused = {}
    for name, r in run.results.items():
        if not c.carries_uids(files[name]) or name in MAY_BE_REFUSED:
            continue
        if _meta_disagrees(files[name]):
            if r.row["cstore"] != "0xA900" or r.row["dcmsend"] != "0x0000":
                refused[name] = ("header and data set disagree: expected 0xA900 byte for byte, Success through dcmsend",
                                 r.row["cstore"], r.row["dcmsend"])
        elif not _stored(r.row):
            refused[name] = (r.row["cstore"], r.notes.get("cstore", ""))
    assert not refused, f"{len(refused)} files with all their UIDs were not stored: {refused}"


def test_a_success_is_stored_indexed_and_comes_back_byte_for_byte(run: c.CorpusRun) -> None:
    wrong = {
        name: {k: r.row[k] for k in ("cstore", "stored", "indexed", "any")}
        for name, r in run.results.items()
        if _stored(r.row) and (r.row["stored"], r.row["indexed"], r.row["any"]) != ("yes", "yes", "identical")
    }
    assert not wrong, f"{len(wrong)} stored files are not all of stored, indexed and byte-identical on retrieve: {wrong}"
    kept = {name: r.row["stored"] for name, r in run.results.items() if not _stored(r.row) and r.row["stored"] != "no"}
    assert not kept, f"refused but kept anyway: {kept}"


def test_refusals_are_the_standards_and_say_why(run: c.CorpusRun) -> None:
    bad = {}
    for name, r in run.results.items():
        status = r.row["cstore"]
        if status in ("unsendable", "0x0000") or status.startswith("0xB"):
            continue  # stored, or pynetdicom cannot send it at all (not Vireo's answer)
        comment = r.notes.get("cstore", "")
        if status == "no context":
            # Refused at negotiation (A-ASSOCIATE-AC result 3): right for DICOMDIR only, every storage class is accepted.
            if r.sop_class != MEDIA_STORAGE_DIRECTORY or "abstract syntax not supported" not in comment:
                bad[name] = f"SOP class {r.sop_class} refused at negotiation ({comment})"
        elif not c.STANDARD_FAILURES.match(status):
            bad[name] = f"{status} is not a C-STORE failure status of the standard ({comment})"
        elif not comment.strip():
            bad[name] = f"{status} without an ErrorComment"
        elif c.server_paths(comment):
            bad[name] = f"{status}: ErrorComment names a server path: {comment}"
    assert not bad, f"{len(bad)} refusals are not standard or do not say why: {bad}"


def test_answers_are_whole_and_errors_say_why_without_server_paths(run: c.CorpusRun) -> None:
    """/rendered is an image or a 4xx/5xx with a reason; the default retrieve is a parseable instance
    (decoding to the same pixels when transcoded) or a 406 with a reason; never a 200 with nothing in it."""
    whole = {"rendered": re.compile(r"200 (jpeg|png|gif)"), "default": re.compile(r"200 [A-Za-z0-9.]+")}
    bad = {}
    for name, r in run.results.items():
        for column, ok in whole.items():
            cell = r.row[column]
            if cell == "-" or ok.fullmatch(cell) or re.fullmatch(r"[45]\d\d", cell):
                continue
            bad[f"{name} {column}"] = f"{cell}: {r.notes.get(column, '')}"
    assert not bad, f"{len(bad)} answers are empty, broken or leak paths: {bad}"


def test_every_stored_file_gets_a_thumbnail(run: c.CorpusRun) -> None:
    """A series thumbnail is drawn (or labelled) for every stored file; "no preview" only where the frame cannot be rendered either."""
    bad = {}
    for name, r in run.results.items():
        if not _stored(r.row):
            continue
        kind, _, shared = r.row["thumbnail"].partition(" (")
        if kind not in ("image", "label", "no preview"):
            bad[name] = (r.row["thumbnail"], r.notes.get("thumbnail", ""))
        elif kind == "no preview" and not shared and r.row["rendered"].startswith("200"):
            bad[name] = (r.row["thumbnail"], f"but /rendered draws it: {r.row['rendered']}")
    assert not bad, f"{len(bad)} stored files have no thumbnail: {bad}"
