"""The real-world corpus: every DICOM file shipped inside the PyPI packages pydicom and pydicom-data.

pydicom ships test files, character-set files and palettes (`pydicom.data`); pydicom-data
(`data_store`) ships the larger test files pydicom would otherwise download. Each file gets
a stable short name, its path inside the package (`pydicom/test_files/CT_small.dcm`,
`pydicom-data/693_J2KR.dcm`), so a table over the corpus names its files the same way on
every machine. Files are deduplicated by content (the first name in sorted order is kept)
and non-DICOM files (JSON, dumps, READMEs, an ICC profile, a gzip) are left out; raw DICOM
without preamble and deliberately broken files stay in: a receiver must store or refuse them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_charset_files, get_palette_files, get_testdata_files
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.dsutils import encode, split_dataset

# The pynetdicom sender here needs the fix for pynetdicom's dropped-reply race that Vireo's own senders have
# (ingest.dicom_transport); without it about one C-STORE in a thousand waits out its DIMSE timeout.
import ingest.dicom_transport  # noqa: F401,E402
from tests.support.vireo import VireoProcess

# Raw (no preamble) DICOM starts with a group 0002 or 0008 tag in either byte order.
_RAW_STARTS = (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")


@dataclass(frozen=True)
class CorpusFile:
    name: str  # stable, package-relative: pydicom/test_files/CT_small.dcm, pydicom-data/693_J2KR.dcm
    path: Path
    sha256: str
    part10: bool  # 128-byte preamble + "DICM"
    size: int

    def read(self) -> bytes:
        return self.path.read_bytes()


def package_roots() -> dict[str, Path]:
    """Where the two packages' data lives: {'pydicom': .../pydicom/data, 'pydicom-data': .../data_store/data}."""
    roots: dict[str, Path] = {}
    spec = importlib.util.find_spec("pydicom.data")
    assert spec and spec.origin, "pydicom is not installed"
    roots["pydicom"] = Path(spec.origin).parent
    store = importlib.util.find_spec("data_store")
    if store is None or not store.origin:
        raise RuntimeError("pydicom-data is not installed: pip install pydicom-data (it is in the [test] extra)")
    roots["pydicom-data"] = Path(store.origin).parent / "data"
    return roots


def is_dicom(path: Path) -> tuple[bool, bool]:
    """(is DICOM, has the Part 10 preamble) of one file, by its bytes, not its name."""
    with path.open("rb") as f:
        head = f.read(132)
    if len(head) == 132 and head[128:132] == b"DICM":
        return True, True
    if head[:2] not in _RAW_STARTS:
        return False, False
    try:
        ds = dcmread(path, force=True, stop_before_pixels=True)
    except (InvalidDicomError, Exception):  # noqa: BLE001 - anything that does not parse is not raw DICOM
        return False, False
    return len(ds) > 0, False


def _short_name(path: Path, roots: dict[str, Path]) -> str:
    for package, root in roots.items():
        try:
            return f"{package}/{path.resolve().relative_to(root.resolve()).as_posix()}"
        except ValueError:
            continue
    raise ValueError(f"{path} is in neither package")


@lru_cache(maxsize=1)
def corpus() -> tuple[CorpusFile, ...]:
    """Every distinct DICOM file of the two packages, sorted by short name."""
    roots = package_roots()
    candidates: set[Path] = set()
    for root in roots.values():
        candidates.update(p for p in root.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts)
    # pydicom's own listings, so a file it names is never missed (they include pydicom-data's files once installed).
    listed = (Path(p) for p in (*get_testdata_files(), *get_charset_files(), *get_palette_files()))
    candidates.update(p for p in listed if p.is_file() and p.suffix != ".py")
    files: list[CorpusFile] = []
    seen: set[str] = set()
    for path in sorted(candidates, key=lambda p: _short_name(p, roots)):
        dicom, part10 = is_dicom(path)
        if not dicom:
            continue
        content = path.read_bytes()
        digest = hashlib.sha256(content).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        files.append(CorpusFile(_short_name(path, roots), path, digest, part10, len(content)))
    return tuple(files)


def skipped() -> list[str]:
    """Short names of the files left out as not DICOM (for the report)."""
    roots = package_roots()
    out = []
    for root in roots.values():
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts and not is_dicom(p)[0]:
                out.append(_short_name(p, roots))
    return out


# =========================================================================== the run: send, then look at every file

COLUMNS = ("dcmsend", "sent", "cstore", "stored", "indexed", "thumbnail", "rendered", "default", "any")
CALLED_AE = "CORPUS"
DIMSE_TIMEOUT = 30  # s: the corpus' files are small; an answer later than this is an answer that never came
DEFAULT_ACCEPT = 'multipart/related; type="application/dicom"'  # PS3.18: Explicit VR Little Endian
ANY_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
# PS3.4 C.4.2.1.4 / PS3.7 C: the failure statuses a C-STORE may answer.
STANDARD_FAILURES = re.compile(r"^0x(A7[0-9A-F]{2}|A9[0-9A-F]{2}|C[0-9A-F]{3}|0122|0124|0210|0211|0212)$")
_PATH = re.compile(r"(?:^|[\s'\"(=,:;])(/(?:[^\s/'\"]+/)+[^\s/'\"]*)")
_PLACEHOLDER_BACKGROUND = (22, 24, 28)


def server_paths(text: str, *known: Path) -> list[str]:
    """Absolute file-system paths in a message a client gets (none may be there)."""
    found = [m.group(1) for m in _PATH.finditer(text or "")]
    found += [str(k) for k in known if str(k) in (text or "")]
    return found


@dataclass
class FileResult:
    """One file's row of the table and the reasons behind its cells."""

    row: dict[str, str]
    notes: dict[str, str]
    sop_class: str = ""  # what the file says it is (its meta's, else its data set's), as proposed


@dataclass
class CorpusRun:
    results: dict[str, FileResult]
    dcmsend_log: str
    dcmsend_summary: dict[str, Any]
    seconds: float
    vireos: int
    data_dirs: list[Path]
    timings: list[str]

    def __repr__(self) -> str:  # pytest prints the fixture with a failure: the summary, not 257 rows
        return f"CorpusRun({len(self.results)} files, {self.vireos} Vireos, {self.seconds:.0f} s)"

    def rows(self) -> dict[str, dict[str, str]]:
        return {name: result.row for name, result in sorted(self.results.items())}


# --------------------------------------------------------------------------- what a file says about itself


def _clean(value: object) -> str:
    return str(value or "").strip("\x00 ")


@lru_cache(maxsize=None)
def file_uids(f: CorpusFile) -> dict[str, str]:
    """SOPClassUID, SOPInstanceUID, StudyInstanceUID, SeriesInstanceUID as the dataset holds them ('' when absent)."""
    try:
        ds = dcmread(f.path, force=True, stop_before_pixels=True)
    except Exception:  # noqa: BLE001
        return {k: "" for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")}
    out = {}
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        try:
            out[keyword] = _clean(ds.get(keyword, ""))
        except Exception:  # noqa: BLE001
            out[keyword] = ""
    return out


def sop_class_of(f: CorpusFile) -> str:
    """The SOP class a sender proposes for the file: its meta's Media Storage SOP Class, else its data set's."""
    try:
        meta, _ = split_dataset(f.path)
        if _clean(meta.get("MediaStorageSOPClassUID")):
            return _clean(meta.get("MediaStorageSOPClassUID"))
    except Exception:  # noqa: BLE001 - no preamble: no meta
        pass
    return file_uids(f)["SOPClassUID"]


def carries_uids(f: CorpusFile) -> bool:
    """True when the dataset has all four identifying UIDs, each a valid UID."""
    uids = file_uids(f)
    return all(uids.values()) and all(UID(v).is_valid for v in uids.values())


def dataset_bytes(content: bytes) -> bytes:
    """A Part 10 stream without its preamble and File Meta group (raw data sets are returned as they are)."""
    if content[128:132] != b"DICM":
        return content
    fp = io.BytesIO(content)
    fp.seek(132)
    read_dataset(fp, is_implicit_VR=False, is_little_endian=True, stop_when=lambda tag, vr, length: tag.group != 2)
    return content[fp.tell():]


# --------------------------------------------------------------------------- dcmsend: the whole corpus in one association


def send_with_dcmsend(files: list[CorpusFile], port: int, workdir: Path) -> tuple[dict[str, tuple[str, str]], str, dict[str, Any]]:
    """dcmsend every file in ONE association; per file (status, reason) from its report file and its log.

    Status is the DIMSE status (0x0000 …), "no context" (no acceptable presentation context), "skipped"
    (dcmsend would not take it into its transfer list: the reason is DCMTK's), "unreadable" (dcmsend failed
    to read it when sending), "declined" (dcmsend would not send a data set without its SOP UIDs), or
    "not sent" (dcmsend never got to it: the association was gone).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    report = workdir / "dcmsend-report.txt"
    command = ["dcmsend", "-v", "+f", "--no-halt", "--single-association", "--create-report-file", str(report),
               "--aetitle", "CORPUSSCU", "--call", CALLED_AE, "127.0.0.1", str(port), *(str(f.path) for f in files)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    (workdir / "dcmsend.log").write_text(log)
    by_path = {str(f.path): f.name for f in files}
    out: dict[str, tuple[str, str]] = {}
    text = report.read_text(errors="replace") if report.exists() else ""
    order: list[str] = []
    for block in re.split(r"\n(?=Number\s+:)", text):
        fields = dict(re.findall(r"^([A-Za-z. ]+?)\s*: ?(.*)$", block, flags=re.M))
        name = by_path.get(fields.get("Filename", "").strip())
        if not name:
            continue
        order.append(name)
        status = fields.get("DIMSE Status", "").strip()
        match = re.match(r"0x([0-9A-Fa-f]{4})", status)
        if match:
            out[name] = (f"0x{match.group(1).upper()}", status)
        elif "no acceptable presentation context" in status:
            out[name] = ("no context", status)
        else:
            out[name] = ("not sent", status)
    # dcmsend itself declines (after "Cannot send SOP instance, missing information", which names no file) to send
    # a data set without SOP Class/Instance UID; such a file is "<not sent>" although later files were answered.
    answered = [i for i, name in enumerate(order) if out[name][0].startswith("0x")]
    for i, name in enumerate(order):
        if out[name][0] == "not sent" and answered and i < answered[-1]:
            out[name] = ("declined", "dcmsend did not send it: SOP Class or Instance UID missing in the data set")
    for line in log.splitlines():
        for marker, status in (("cannot add DICOM file to the transfer list: ", "skipped"), ("cannot send SOP instance from file: ", "unreadable")):
            if marker in line:
                rest = line.split(marker, 1)[1]
                for path, name in by_path.items():
                    if rest.startswith(path + ": "):
                        out[name] = (status, rest[len(path) + 2:])
    for f in files:
        out.setdefault(f.name, ("absent", "dcmsend reported nothing about this file"))
    summary = {
        "returncode": result.returncode,
        "associations": int(m.group(1)) if (m := re.search(r"Number of associations\s*:\s*(\d+)", log)) else None,
        "aborted": bool(re.search(r"Peer aborted Association|A-ABORT|Association Aborted", log)),
        "command": " ".join(command[:-len(files)]) + f" <{len(files)} files>",
    }
    return out, log, summary


# --------------------------------------------------------------------------- pynetdicom: each file in a C-STORE of its own, byte for byte


@dataclass
class Sent:
    mode: str  # "bytes" (file sent as it is, STORE_SEND_CHUNKED_DATASET), "dataset" (raw/meta-less file read and encoded), "-"
    status: str  # "0x0000" …, "aborted", "timeout", "no context", "rejected", "unsendable"
    comment: str
    payload: bytes | None  # the data set bytes that went over the wire


def _syntax_of_encoding(ds: Dataset) -> UID | None:
    implicit, little = ds.original_encoding
    if implicit is None:
        return None
    return ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)


@dataclass
class _Prepared:
    file: CorpusFile
    mode: str
    context: tuple[str, str]  # (SOP class, transfer syntax) proposed for it
    target: Path | Dataset
    payload: bytes


_REJECTIONS = {0x01: "user rejection", 0x02: "no reason", 0x03: "abstract syntax not supported", 0x04: "transfer syntax not supported"}


def _prepare(f: CorpusFile) -> _Prepared | Sent:
    """How pynetdicom sends a file: as it is (its meta names SOP class, instance and syntax) or, without usable meta, read and encoded."""
    try:
        meta, offset = split_dataset(f.path)
        sop_class = _clean(meta.get("MediaStorageSOPClassUID"))
        syntax = _clean(meta.get("TransferSyntaxUID"))
        if not (sop_class and syntax and _clean(meta.get("MediaStorageSOPInstanceUID"))):
            raise AttributeError("file meta lacks MediaStorageSOPClassUID, MediaStorageSOPInstanceUID or TransferSyntaxUID")
        prepared = _Prepared(f, "bytes", (sop_class, syntax), f.path, f.read()[offset:])
    except Exception as exc:  # noqa: BLE001 - no (usable) meta: send the data set as a Dataset, as a user's script would
        try:
            ds = dcmread(f.path, force=True)
            sop_class = _clean(ds.get("SOPClassUID"))
            guessed = _syntax_of_encoding(ds)
            if not sop_class or not _clean(ds.get("SOPInstanceUID")) or guessed is None:
                return Sent("-", "unsendable", f"cannot be sent with pynetdicom: {exc}; the data set lacks SOPClassUID/SOPInstanceUID", None)
            ds.file_meta = getattr(ds, "file_meta", None) or Dataset()
            ds.file_meta.TransferSyntaxUID = guessed
            payload = encode(ds, guessed.is_implicit_VR, guessed.is_little_endian, guessed.is_deflated)
            prepared = _Prepared(f, "dataset", (sop_class, str(guessed)), ds, payload)
        except Exception as exc2:  # noqa: BLE001
            return Sent("-", "unsendable", f"cannot be sent with pynetdicom: {exc2}", None)
    try:
        AE().add_requested_context(*prepared.context)
    except Exception as exc:  # noqa: BLE001
        return Sent(prepared.mode, "unsendable", f"pynetdicom cannot propose {prepared.context[0]!r}: {exc}", prepared.payload)
    return prepared


@contextmanager
def chunked_sending() -> Iterator[None]:
    """pynetdicom sends a file path as its bytes (a process-wide setting, put back afterwards for other tests)."""
    before = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = before


def send_with_pynetdicom(files: list[CorpusFile], port: int) -> dict[str, Sent]:
    """Each file in a C-STORE of its own, byte for byte (STORE_SEND_CHUNKED_DATASET).

    The files share associations that propose exactly their (SOP class, transfer syntax) pairs,
    at most 128 a time; when one is aborted, the file being sent is marked so and the next file
    opens a new association.
    """
    assert _config.STORE_SEND_CHUNKED_DATASET, "send inside `with chunked_sending():`"
    out: dict[str, Sent] = {}
    queue: list[_Prepared] = []
    for f in files:
        prepared = _prepare(f)
        if isinstance(prepared, Sent):
            out[f.name] = prepared
        else:
            queue.append(prepared)
    pairs = list(dict.fromkeys(p.context for p in queue))
    for batch in (pairs[i:i + 128] for i in range(0, len(pairs), 128)):
        ae = AE(ae_title="CORPUSSCU")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = DIMSE_TIMEOUT
        for sop_class, syntax in batch:
            ae.add_requested_context(sop_class, syntax)
        wanted = set(batch)
        assoc = None
        for item in (p for p in queue if p.context in wanted):
            if assoc is None:
                assoc = ae.associate("127.0.0.1", port, ae_title=CALLED_AE)
            accepted = {(str(c.abstract_syntax), str(c.transfer_syntax[0])) for c in assoc.accepted_contexts}
            rejected = {str(c.abstract_syntax): c.result for c in assoc.rejected_contexts}
            if item.context not in accepted and item.context[0] in rejected:
                # pynetdicom aborts an association in which nothing was accepted: the reason is still the context's
                result = rejected[item.context[0]]
                out[item.file.name] = Sent(item.mode, "no context", f"presentation context rejected: {_REJECTIONS.get(result, result)}", item.payload)
                continue
            if not assoc.is_established:
                why = "association rejected" if assoc.is_rejected else "association aborted or never connected"
                out[item.file.name] = Sent(item.mode, "rejected", why, item.payload)
                assoc = None
                continue
            began = time.monotonic()
            try:
                status = assoc.send_c_store(item.target)
            except Exception as exc:  # noqa: BLE001
                out[item.file.name] = Sent(item.mode, "unsendable", f"pynetdicom: {exc}", item.payload)
                continue
            if assoc.is_aborted or "Status" not in status:
                if time.monotonic() - began >= DIMSE_TIMEOUT - 1:
                    out[item.file.name] = Sent(item.mode, "timeout", f"no answer within {DIMSE_TIMEOUT} s (the sender then aborts)", item.payload)
                else:
                    out[item.file.name] = Sent(item.mode, "aborted", "the receiver aborted the association instead of answering", item.payload)
                assoc = None
                continue
            out[item.file.name] = Sent(item.mode, f"0x{int(status.Status):04X}", _clean(status.get("ErrorComment", "")), item.payload)
        if assoc is not None and assoc.is_established:
            assoc.release()
    return out


# --------------------------------------------------------------------------- what Vireo then serves


def multipart_parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part of a multipart/related answer."""
    match = re.search(r'boundary="?([^";,\s]+)"?', response.headers.get("content-type", ""))
    if not match:
        return []
    delimiter = b"--" + match.group(1).encode()
    parts = []
    for segment in response.content.split(delimiter)[1:]:
        if segment.startswith(b"--"):
            break
        segment = segment[2:] if segment.startswith(b"\r\n") else segment
        head, _, body = segment.partition(b"\r\n\r\n")
        if body.endswith(b"\r\n"):
            body = body[:-2]
        content_type = ""
        for line in head.decode("latin-1").split("\r\n"):
            if line.lower().startswith("content-type:"):
                content_type = line.split(":", 1)[1].strip()
        parts.append((content_type, body))
    return parts


def _code(response: httpx.Response) -> str:
    """The status as a table cell; 599 is Checker.get's mark of an answer broken off mid-stream."""
    return "broken" if response.status_code == 599 else str(response.status_code)


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body.get("detail", body)) if isinstance(body, dict) else str(body)
    except Exception:  # noqa: BLE001
        return response.text[:300]


def _pixels(ds: Dataset) -> np.ndarray | None:
    try:
        return ds.pixel_array
    except Exception:  # noqa: BLE001 - not decodable here: nothing to compare
        return None


def _syntax_name(uid: str) -> str:
    u = UID(uid)
    return u.keyword or uid


class Checker:
    """The per-file checks against one Vireo, over one keep-alive HTTP client."""

    def __init__(self, vireo: VireoProcess) -> None:
        self.vireo = vireo
        self.client = httpx.Client(base_url=vireo.url, auth=vireo.auth, timeout=60)
        self.known_paths = (vireo.data_dir.resolve(), Path(__file__).resolve().parents[2])

    def close(self) -> None:
        self.client.close()

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """GET that turns a broken answer (a connection reset inside a started stream) into a 599 'response'."""
        try:
            return self.client.get(url, **kwargs)
        except httpx.HTTPError as exc:
            return httpx.Response(599, json={"detail": f"answer broken off: {type(exc).__name__}: {exc}"})

    def _bad_reason(self, reason: str) -> str | None:
        if not reason.strip():
            return "no reason given"
        paths = server_paths(reason, *self.known_paths)
        return f"reason names server paths {paths}" if paths else None

    def check(self, f: CorpusFile, sent: Sent, stored_stems: set[str]) -> tuple[dict[str, str], dict[str, str], str | None]:
        """stored, indexed, rendered, default, any cells (and notes) of one file; returns the series UID to thumbnail."""
        row: dict[str, str] = {}
        notes: dict[str, str] = {}
        uids = file_uids(f)
        sop = uids["SOPInstanceUID"]
        row["stored"] = "yes" if sop and sop in stored_stems else "no"
        succeeded = sent.status == "0x0000" or sent.status.startswith("0xB")
        if not sop:
            row["indexed"] = "-"
        else:
            r = self.get("/dicomweb/instances", params={"SOPInstanceUID": sop, "includefield": "all"})
            if r.status_code != 200:
                row["indexed"] = f"QIDO {_code(r)}"
                notes["indexed"] = _reason(r)
                hits = []
            else:
                hits = [h for h in r.json() if (h.get("00080018", {}).get("Value") or [""])[0] == sop]
                row["indexed"] = "yes" if len(hits) == 1 else "no" if not hits else f"{len(hits)} times"
        if not succeeded:
            for column in ("thumbnail", "rendered", "default", "any"):
                row[column] = "-"
            return row, notes, None
        hit = hits[0] if sop and row["indexed"] == "yes" else {}
        study = (hit.get("0020000D", {}).get("Value") or [uids["StudyInstanceUID"]])[0]
        series = (hit.get("0020000E", {}).get("Value") or [uids["SeriesInstanceUID"]])[0]
        base = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"

        r = self.get(f"{base}/frames/1/rendered")
        if r.status_code == 200:
            try:
                image = Image.open(io.BytesIO(r.content))
                image.load()
                row["rendered"] = f"200 {image.format.lower()}"
            except Exception as exc:  # noqa: BLE001
                row["rendered"] = "200 not an image"
                notes["rendered"] = str(exc)
        else:
            reason = _reason(r)
            row["rendered"] = _code(r)
            notes["rendered"] = reason
            if bad := self._bad_reason(reason):
                row["rendered"] += " BAD REASON"
                notes["rendered"] += f" [{bad}]"

        original = dcmread(f.path, force=True)
        r = self.get(base, headers={"Accept": DEFAULT_ACCEPT})
        row["default"], notes_default = self._default_cell(r, sop, original)
        if notes_default:
            notes["default"] = notes_default

        r = self.get(base, headers={"Accept": ANY_ACCEPT})
        if r.status_code != 200:
            row["any"] = _code(r)
            notes["any"] = _reason(r)
        else:
            parts = multipart_parts(r)
            if len(parts) != 1 or not parts[0][1]:
                row["any"] = f"200 with {len(parts)} parts" if len(parts) != 1 else "200 empty"
            else:
                got = dataset_bytes(parts[0][1])
                row["any"] = "identical" if got == sent.payload else "differs"
                if got != sent.payload:
                    notes["any"] = f"{len(got)} bytes back, {len(sent.payload or b'')} sent ({parts[0][0]})"
        return row, notes, series

    def _default_cell(self, r: httpx.Response, sop: str, original: Dataset) -> tuple[str, str]:
        if r.status_code != 200:
            reason = _reason(r)
            bad = self._bad_reason(reason)
            return (f"{_code(r)} BAD REASON" if bad else _code(r)), reason + (f" [{bad}]" if bad else "")
        parts = multipart_parts(r)
        if not parts:
            return "200 no parts", f"{len(r.content)} bytes, Content-Type {r.headers.get('content-type')}"
        if len(parts) != 1 or not parts[0][1]:
            return ("200 empty" if len(parts) == 1 else f"200 with {len(parts)} parts"), ""
        try:
            got = dcmread(io.BytesIO(parts[0][1]))
            syntax = _syntax_name(str(got.file_meta.TransferSyntaxUID))
        except Exception as exc:  # noqa: BLE001
            return "200 unparseable", str(exc)
        cell = f"200 {syntax}"
        if _clean(got.get("SOPInstanceUID")) != sop:
            return cell + " new SOPInstanceUID", f"asked for {sop}, got {_clean(got.get('SOPInstanceUID'))}"
        if "PixelData" in original and str(got.file_meta.TransferSyntaxUID) != str(getattr(original.file_meta, "TransferSyntaxUID", "")):
            before, after = _pixels(original), _pixels(got)
            if before is not None and (after is None or before.shape != after.shape or not np.array_equal(before, after)):
                return cell + " pixels differ", "transcoded pixels do not decode to the original's"
        return cell, ""

    def thumbnail(self, series_uid: str, deadline: float) -> tuple[str, str]:
        """The series thumbnail: image (drawn from pixels), label (a tile with the object's name: no pixels),
        no preview (its pixels could not be drawn), or what went wrong; "(series of N)" when other files of
        the corpus share the series, whose middle instance it shows."""
        while True:
            r = self.get(f"/api/series/{series_uid}/thumbnail")
            if r.status_code != 200:
                return _code(r), _reason(r)
            if "no-store" not in r.headers.get("cache-control", ""):
                break
            if time.monotonic() > deadline:
                return "pending", "not drawn in time"
            time.sleep(0.5)
        document = self.get(f"/api/series/{series_uid}")
        info = document.json() if document.status_code == 200 else {}
        count = int(info.get("instances") or 1)
        suffix = f" (series of {count})" if count > 1 else ""
        try:
            image = Image.open(io.BytesIO(r.content)).convert("RGB")
        except Exception as exc:  # noqa: BLE001
            return "not an image" + suffix, str(exc)
        corners = {image.getpixel((0, 0)), image.getpixel((image.width - 1, image.height - 1))}
        if corners == {_PLACEHOLDER_BACKGROUND}:
            from ingest.thumbnails import placeholder_thumbnail  # the tile Vireo draws when it cannot draw the pixels

            if r.content == placeholder_thumbnail(f"{info.get('Modality') or 'DICOM'} · no preview"):
                return "no preview" + suffix, ""
            return "label" + suffix, ""
        return "image" + suffix, ""


# --------------------------------------------------------------------------- rounds: files that share a SOP Instance UID go to different Vireos


def rounds(files: list[CorpusFile]) -> list[list[CorpusFile]]:
    """Split the corpus so no Vireo gets two files of one SOP Instance UID (it would keep only the first).

    Many test files are one image in many encodings under one UID; each must be stored and retrieved
    in its own right, so the k-th file of a UID goes to the k-th Vireo.
    """
    out: list[list[CorpusFile]] = []
    seen: dict[str, int] = {}
    for f in files:
        sop = file_uids(f)["SOPInstanceUID"]
        k = seen.get(sop, 0) if sop else 0
        if sop:
            seen[sop] = k + 1
        while len(out) <= k:
            out.append([])
        out[k].append(f)
    return out


def _start(data_dir: Path) -> VireoProcess:
    """A fresh Vireo; one more try after a pause, for a work tree caught in the middle of an edit."""
    for attempt in range(2):
        # One receiver worker: the statuses come from the same code as with one per core (tests/test_receiver_workers.py),
        # and twenty Vireos each starting two workers cost the suite about 20 s of CPU.
        vireo = VireoProcess(data_dir if attempt == 0 else data_dir.with_name(data_dir.name + "-retry"), VIREO_DICOM_WORKERS="1")
        try:
            return vireo.start(timeout=180)
        except RuntimeError:
            vireo.kill()  # start() leaves a process that never opened its ports running
            if attempt:
                raise
            time.sleep(20)
    raise AssertionError("unreachable")


def _run_round(files: list[CorpusFile], data_dir: Path, thumbnail_timeout: float, timings: list[str],
               sent_event: threading.Event | None = None, wait_for: threading.Event | None = None) -> dict[str, FileResult]:
    """One fresh Vireo: send `files`, check each, wait for the thumbnails. `wait_for`: start only once it is set
    (or 10 minutes passed); `sent_event`: set once this round's files are sent (or it failed before)."""
    if wait_for is not None:
        wait_for.wait(timeout=600)
    marks = [time.monotonic()]
    try:
        vireo = _start(data_dir)
        marks.append(time.monotonic())
    except BaseException:
        if sent_event is not None:
            sent_event.set()
        raise
    try:
        try:
            sent = send_with_pynetdicom(files, vireo.dicom_port)
        finally:
            if sent_event is not None:
                sent_event.set()
        marks.append(time.monotonic())
        # vireo.data_dir, not data_dir: a start that failed once retries in a fresh folder beside it
        stems = {p.stem for p in (vireo.data_dir / "pacs").rglob("*.dcm") if ".incoming" not in p.parts}
        checker = Checker(vireo)
        try:
            results: dict[str, FileResult] = {}
            series_of: dict[str, str] = {}
            with ThreadPoolExecutor(max_workers=2) as pool:  # light: the server's work is most of it
                checked = list(pool.map(lambda f: checker.check(f, sent[f.name], stems), files))
            for f, (cells, more, series) in zip(files, checked):
                s = sent[f.name]
                row = {"sent": s.mode, "cstore": s.status}
                notes = {"cstore": s.comment} if s.comment else {}
                row.update(cells)
                notes.update(more)
                results[f.name] = FileResult(row, notes, sop_class_of(f))
                if series:
                    series_of[f.name] = series
            marks.append(time.monotonic())
            deadline = time.monotonic() + thumbnail_timeout
            drawn: dict[str, tuple[str, str]] = {}
            for name, series in series_of.items():
                if series not in drawn:
                    drawn[series] = checker.thumbnail(series, deadline)
                results[name].row["thumbnail"] = drawn[series][0]
                if drawn[series][1]:
                    results[name].notes["thumbnail"] = drawn[series][1]
            marks.append(time.monotonic())
            steps = ("start", "send", "check", "thumbnails")
            timings.append(f"{data_dir.parent.name}: {len(files)} files, "
                           + ", ".join(f"{step} {b - a:.1f} s" for step, a, b in zip(steps, marks, marks[1:])))
            return results
        finally:
            checker.close()
    finally:
        vireo.stop()


def run_corpus(workdir: Path, files: list[CorpusFile] | None = None, parallel: int = 5, thumbnail_timeout: float = 60) -> CorpusRun:
    """The whole corpus: dcmsend into one Vireo, pynetdicom file by file into fresh Vireos (one per round), then every check.

    Round 0 (most of the corpus) is the longest path, so its Vireo starts and gets its files alongside the
    dcmsend pass only; the small rounds (one Vireo each, mostly start-up and waiting) then run `parallel` - 1
    at a time beside round 0's checks. Started all at once, the start-ups slowed round 0 down by as much
    as they ran beside it.
    """
    started = time.monotonic()
    files = list(files if files is not None else corpus())
    workdir.mkdir(parents=True, exist_ok=True)
    split = rounds(files)
    data_dirs = [workdir / "dcmsend" / "data", *(workdir / f"round{k:02d}" / "data" for k in range(len(split)))]
    for d in data_dirs:
        d.parent.mkdir(parents=True, exist_ok=True)

    def dcmsend_pass() -> tuple[dict[str, tuple[str, str]], str, dict[str, Any]]:
        t0 = time.monotonic()
        vireo = _start(data_dirs[0])
        t1 = time.monotonic()
        try:
            return send_with_dcmsend(files, vireo.dicom_port, workdir / "dcmsend")
        finally:
            vireo.stop()
            timings.append(f"dcmsend: {len(files)} files, start {t1 - t0:.1f} s, send {time.monotonic() - t1:.1f} s")

    timings: list[str] = []
    with chunked_sending(), ThreadPoolExecutor(max_workers=parallel) as pool:
        dcmsend_future = pool.submit(dcmsend_pass)
        first_sent = threading.Event()
        round_futures = [pool.submit(_run_round, chunk, data_dirs[k + 1], thumbnail_timeout, timings,
                                     first_sent if k == 0 else None, None if k == 0 else first_sent)
                         for k, chunk in enumerate(split)]
        results: dict[str, FileResult] = {}
        for future in round_futures:
            results.update(future.result())
        by_dcmsend, log, summary = dcmsend_future.result()
    for name, result in results.items():
        status, reason = by_dcmsend[name]
        result.row["dcmsend"] = status
        if reason and not status.startswith("0x0000"):
            result.notes["dcmsend"] = reason
        result.row = {column: result.row.get(column, "-") for column in COLUMNS}
    return CorpusRun(results, log, summary, time.monotonic() - started, len(data_dirs), data_dirs, sorted(timings))


# --------------------------------------------------------------------------- the table, as Python and as markdown

EXPECTED_PATH = Path(__file__).resolve().parents[1] / "corpus_expected.py"


def write_expected(rows: dict[str, dict[str, str]], path: Path = EXPECTED_PATH) -> None:
    """Write the table as a Python dict literal, one line per file, sorted by name."""
    lines = [
        '"""The corpus table Vireo is expected to produce (tests/test_real_world_corpus.py).',
        "",
        "Regenerate with: VIREO_CORPUS_WRITE_EXPECTED=1 .venv/bin/python -m pytest tests/test_real_world_corpus.py -q",
        f"Columns: {', '.join(COLUMNS)}.",
        '"""',
        "",
        "EXPECTED = {",
    ]
    for name in sorted(rows):
        lines.append(f"    {name!r}: {{{', '.join(f'{c!r}: {rows[name][c]!r}' for c in COLUMNS)}}},")
    lines.append("}")
    path.write_text("\n".join(lines) + "\n")


def load_expected(path: Path = EXPECTED_PATH) -> dict[str, dict[str, str]] | None:
    """The expected table as the file holds it now (read afresh, not an imported module), or None without one."""
    if not path.exists():
        return None
    namespace: dict[str, Any] = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)  # noqa: S102 - our own data file
    return namespace["EXPECTED"]


def differences(expected: dict[str, dict[str, str]], got: dict[str, dict[str, str]], notes: dict[str, FileResult] | None = None) -> list[str]:
    """One line per file whose row differs: the file, then expected → got for each differing cell (with the reason)."""
    out = []
    for name in sorted(set(expected) | set(got)):
        if name not in got:
            out.append(f"{name}: expected in the corpus, not found")
            continue
        if name not in expected:
            out.append(f"{name}: new file, row {got[name]}")
            continue
        cells = []
        for column in COLUMNS:
            if expected[name].get(column) != got[name].get(column):
                why = (notes[name].notes.get(column, "") if notes and name in notes else "")
                cells.append(f"{column}: {expected[name].get(column)!r} -> {got[name].get(column)!r}" + (f" ({why[:160]})" if why else ""))
        if cells:
            out.append(f"{name}: " + "; ".join(cells))
    return out


NOMINAL = {"dcmsend": "0x0000", "cstore": "0x0000", "stored": "yes", "indexed": "yes", "any": "identical"}


def nominal(row: dict[str, str]) -> bool:
    """Sent, stored, indexed, thumbnailed, rendered and retrieved whole, by both senders."""
    return (all(row[k] == v for k, v in NOMINAL.items()) and row["thumbnail"].split(" (")[0] in ("image", "label")
            and re.fullmatch(r"200 (jpeg|png|gif)", row["rendered"]) is not None
            and re.fullmatch(r"200 [A-Za-z0-9.]+", row["default"]) is not None)


def markdown(run: CorpusRun, with_notes: bool = True, all_rows: bool = False) -> str:
    """The table as markdown: counts per column, then every file that is not nominal (or every file)."""
    lines = [f"{len(run.results)} files, {run.vireos} Vireo processes, {run.seconds:.0f} s. "
             f"dcmsend: {run.dcmsend_summary.get('associations')} association(s), aborted: {run.dcmsend_summary.get('aborted')}.",
             "", f"Left out as not DICOM: {', '.join(skipped())}.", "",
             "| column | outcomes (files) |", "|---|---|"]
    for column in COLUMNS:
        counts = Counter(r.row[column] for r in run.results.values())
        lines.append(f"| {column} | " + ", ".join(f"{v}: {n}" for v, n in counts.most_common()) + " |")
    shown = sorted((n, r) for n, r in run.results.items() if all_rows or not nominal(r.row))
    normal = len(run.results) - sum(1 for _, r in run.results.items() if not nominal(r.row))
    lines += ["", f"{normal} files are nominal (both senders 0x0000, stored, indexed, thumbnail, rendered, "
              f"default retrieve whole, `*` retrieve byte-identical)" + ("." if all_rows else "; the others:"), ""]
    lines += ["| file | " + " | ".join(COLUMNS) + (" | reasons |" if with_notes else " |"),
              "|---|" + "---|" * (len(COLUMNS) + (1 if with_notes else 0))]
    for name, result in shown:
        line = f"| {name} | " + " | ".join(result.row[c] for c in COLUMNS)
        if with_notes:
            reasons = "; ".join(f"{k}: {v}" for k, v in result.notes.items() if v)
            line += " | " + reasons.replace("|", "\\|").replace("\n", " ")[:400]
        lines.append(line + " |")
    return "\n".join(lines) + "\n"
