"""Fetch, check and prepare the prebuilt OHIF Viewer so Vireo can serve it under /ohif.

`npm pack @ohif/app@<pinned>` (the ordinary npm client, so proxies and mirrors configured for
npm apply) or a tarball given with `--from`; its sha512 must equal the pinned
`dist.integrity` (and, when downloaded, the registry's). The dist is then unpacked without
what Vireo does not serve (the 136 MB AI-segmentation runtime, source maps, the service
worker), its public path is rewritten from `/` to `/ohif/`, URLs that would fetch from the
internet are pointed at a local path that answers 404, and text files get a gzip twin.
The work happens in a staging folder renamed into place at the end, so an interrupted
install leaves the old one (or none) — never half of one. Stdlib only: set-up runs it
before anything else is imported, at every test start.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from app.ohif import location
from app.ohif.rewrite import neutralise_external_urls, rewrite_public_path

DIST_PREFIX = "package/dist/"
# Left out of the install: the ONNX runtime of the AI segmentation tools (it would fetch its
# model from huggingface.co anyway), source maps, and the Workbox service worker (loaded from
# Google's CDN; a cache that outlives a Vireo upgrade is not wanted either).
SKIPPED_DIRS = ("ort/",)
SKIPPED_SUFFIXES = (".map",)
SKIPPED_FILES = ("sw.js", "app-config.js", "_headers", "_redirects", "serve.json", "google.js")
COMPRESSED_SUFFIXES = (".js", ".css", ".html", ".json", ".jsonc", ".svg", ".wasm", ".xml", ".webapp", ".txt")
COMPRESS_MIN_BYTES = 1024
GZIP_LEVEL = 6


class InstallError(RuntimeError):
    """Why OHIF could not be installed, in words for the person running set-up."""


@dataclass
class InstallReport:
    dist: Path
    already_installed: bool = False
    files: int = 0
    bytes: int = 0
    skipped_bytes: int = 0
    rewritten: list[str] = field(default_factory=list)
    neutralised: list[str] = field(default_factory=list)
    compressed: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        if self.already_installed:
            return f"OHIF {location.OHIF_VERSION} is installed in {self.dist}"
        return (
            f"OHIF {location.OHIF_VERSION} installed in {self.dist}: {self.files} files, {self.bytes / 1e6:.0f} MB "
            f"({self.skipped_bytes / 1e6:.0f} MB left out), public path rewritten in {len(self.rewritten)} files, "
            f"internet URLs disabled in {len(self.neutralised)}, {self.compressed} gzip twins, {self.seconds:.1f} s"
        )


def integrity_of(tarball: Path) -> str:
    """The tarball's Subresource-Integrity string, as npm's `dist.integrity` spells it."""
    digest = hashlib.sha512()
    with tarball.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def _npm(*args: str, cwd: Path) -> str:
    try:
        done = subprocess.run(["npm", *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    except FileNotFoundError:
        raise InstallError("npm is not installed: install Node.js/npm, or download the tarball elsewhere and use --from") from None
    if done.returncode != 0:
        raise InstallError(f"npm {' '.join(args)} failed: {done.stderr.strip()[-400:]}")
    return done.stdout


def download(folder: Path) -> Path:
    """`npm pack` the pinned version into `folder`, checked against the registry's dist.integrity."""
    spec = f"{location.OHIF_PACKAGE}@{location.OHIF_VERSION}"
    registry = json.loads(_npm("view", spec, "dist.integrity", "--json", cwd=folder) or "null")
    if registry != location.OHIF_INTEGRITY:
        raise InstallError(f"the registry's integrity of {spec} is {registry!r}, not the pinned {location.OHIF_INTEGRITY}")
    packed = json.loads(_npm("pack", spec, "--json", "--pack-destination", str(folder), cwd=folder))
    return folder / packed[0]["filename"]


def verify(tarball: Path) -> None:
    found = integrity_of(tarball)
    if found != location.OHIF_INTEGRITY:
        raise InstallError(
            f"{tarball.name} is not {location.OHIF_PACKAGE}@{location.OHIF_VERSION}: its sha512 is {found[:30]}…, "
            f"expected {location.OHIF_INTEGRITY[:30]}…"
        )


def _kept(relative: str) -> bool:
    return not (relative.startswith(SKIPPED_DIRS) or relative.endswith(SKIPPED_SUFFIXES) or relative in SKIPPED_FILES)


def unpack(tarball: Path, staging: Path, report: InstallReport) -> None:
    """Extract package/dist/ into `staging`, leaving out what Vireo does not serve."""
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive:
            if not member.name.startswith(DIST_PREFIX) or not member.isfile():
                continue
            relative = member.name[len(DIST_PREFIX):]
            if not _kept(relative):
                report.skipped_bytes += member.size
                continue
            target = (staging / relative).resolve()
            if not target.is_relative_to(staging):
                raise InstallError(f"{tarball.name} holds a path outside its dist folder: {member.name!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None
            with source, target.open("wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
            report.files += 1
            report.bytes += member.size


def precompress(staging: Path) -> int:
    """Write `<file>.gz` beside each text file where it is smaller, so serving costs no CPU."""
    count = 0
    for path in staging.rglob("*"):
        if not path.is_file() or path.suffix not in COMPRESSED_SUFFIXES or path.stat().st_size < COMPRESS_MIN_BYTES:
            continue
        data = path.read_bytes()
        packed = gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)
        if len(packed) < len(data) * 0.9:
            path.with_name(path.name + ".gz").write_bytes(packed)
            count += 1
    return count


def install(tarball: Path | None = None, root: Path | None = None, *, force: bool = False) -> InstallReport:
    """Install the pinned OHIF into `root` (default: location.ohif_root()); quick when it is there already."""
    root = root or location.ohif_root()
    dist = location.dist_dir(root)
    if tarball is not None and not Path(tarball).is_file():
        raise InstallError(f"no such tarball: {tarball}")
    if not force and location.installed(root) is not None:
        return InstallReport(dist, already_installed=True)
    started = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    report = InstallReport(dist)
    with tempfile.TemporaryDirectory(prefix=".ohif-staging-", dir=root) as work:
        workdir = Path(work)
        source = Path(tarball).resolve() if tarball else download(workdir)
        verify(source)
        staging = workdir / "dist"
        staging.mkdir()
        unpack(source, staging, report)
        if not (staging / "index.html").is_file():
            raise InstallError(f"{source.name} has no package/dist/index.html: not the prebuilt OHIF app")
        report.rewritten = rewrite_public_path(staging)
        report.neutralised = neutralise_external_urls(staging)
        report.compressed = precompress(staging)
        report.seconds = time.monotonic() - started
        marker = {"version": location.OHIF_VERSION, "integrity": location.OHIF_INTEGRITY, "rewritten": report.rewritten,
                  "neutralised": report.neutralised, "files": report.files, "bytes": report.bytes}
        (staging / location.MARKER).write_text(json.dumps(marker, indent=1))
        old = workdir / "old"
        if dist.exists():
            dist.rename(old)  # removed with the staging folder
        staging.rename(dist)
    return report
