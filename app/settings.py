"""Vireo's settings: one typed object filled from `VIREO_*` variables and command-line options.

Every option has an environment variable of the same name (`--http-port` ↔ `VIREO_HTTP_PORT`),
so a container, a systemd unit and a developer's shell all configure Vireo the same way.
"""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ENV_PREFIX = "VIREO_"


@dataclass(frozen=True)
class Settings:
    """Everything that configures one Vireo process."""

    data_dir: Path = field(default=Path("./data"), metadata={"help": "database, PACS files, thumbnails, uploads, job folders"})
    host: str = field(default="127.0.0.1", metadata={"help": "address of the web UI, /api and /dicomweb"})
    http_port: int = field(default=8080, metadata={"help": "HTTP port of the web UI, /api and /dicomweb"})
    dicom_port: int = field(default=11112, metadata={"help": "DICOM receiver port (0 picks a free one)"})
    dicom_host: str = field(default="", metadata={"help": "address the DICOM receiver binds to (default: --host)"})
    dicom_ae_title: str = field(default="VIREO", metadata={"help": "this node's own AE title"})
    dicom_workers: int = field(default=-1, metadata={"help": "receiver worker processes that serve storage associations, so that receiving uses every core (-1: one per CPU core; 0: none, all in the main process)"})
    dicom_max_associations: int = field(default=16, metadata={"help": "concurrent DICOM associations accepted"})
    dicom_allowed_calling_aets: str = field(default="", metadata={"help": "comma-separated calling AE titles allowed to send (empty: anyone)"})
    dicom_max_connections_per_peer: int = field(default=32, metadata={"help": "open DICOM connections one address may hold; past it, its oldest connection still without an A-ASSOCIATE-RQ is closed (a new one is refused only when all are associations)"})
    database_url: str = field(default="", metadata={"help": "SQLAlchemy URL, e.g. postgresql+psycopg://… (default: SQLite in the data dir)"})
    instance_name: str = field(default_factory=socket.gethostname, metadata={"help": "this instance's name in a federation"})
    admin_password: str = field(default="", metadata={"help": "password of user admin, set on first start (default: generated and printed once)"})
    dask_scheduler: str = field(default="", metadata={"help": "address of a Dask scheduler to run jobs on"})
    dags_dir: str = field(default="", metadata={"help": "folder of user DAG files, *.py (default: <data dir>/dags)"})
    workers: int = field(default=0, metadata={"help": "job processes the local executor runs at once (0: one per CPU core)"})
    session_hours: float = field(default=12.0, metadata={"help": "a login session expires after this many hours"})
    credential_cache_seconds: float = field(default=60.0, metadata={"help": "seconds a verified HTTP Basic password is remembered before it is checked again (argon2 is slow on purpose)"})
    thumbnail_quiet_seconds: float = field(default=3.0, metadata={"help": "a series' thumbnail is drawn once it has been quiet this long"})
    max_request_bytes: int = field(default=8 * 1024**2, metadata={"help": "largest request body of an API call or page (JSON, forms), in bytes; refused with 413 while it streams"})
    max_upload_request_bytes: int = field(default=2 * 1024**3, metadata={"help": "largest body of one request to /api/uploads (a file, or one chunk of a larger file), in bytes"})
    max_stow_request_bytes: int = field(default=4 * 1024**3, metadata={"help": "largest body of one STOW-RS request to /dicomweb/studies, in bytes"})
    import_max_unpacked_bytes: int = field(default=200 * 1024**3, metadata={"help": "most bytes an uploaded zip may unpack to (counted while unpacking; never more than the free disk space)"})
    nifti_max_voxels: int = field(default=2**28, metadata={"help": "most voxels one NIfTI image of an import may have (read from its header, before its data: 2^28 is 512x512x1024)"})
    dicom_destinations: str = field(default="", metadata={"help": "C-MOVE destinations, comma-separated AE=host:port (e.g. WORKSTATION=10.0.0.5:104)"})
    ssl_certfile: str = field(default="", metadata={"help": "PEM certificate to serve HTTPS with (default: plain HTTP)"})
    ssl_keyfile: str = field(default="", metadata={"help": "PEM private key of --ssl-certfile"})
    cors_origins: str = field(default="", metadata={"help": "origins whose browser pages may call /dicomweb (comma-separated scheme://host[:port]; default: none)"})
    ohif_url: str = field(default="", metadata={"help": "base URL of an OHIF Viewer reading this Vireo's /dicomweb; shows 'Open in OHIF' for studies"})
    public_url: str = field(default="", metadata={"help": "URL clients reach this Vireo at, e.g. https://pacs.example.org/vireo behind a proxy: base of the links DICOMweb hands out (default: the address each request was served on)"})
    trusted_proxies: str = field(default="", metadata={"help": "reverse proxies (comma-separated addresses or CIDR networks) whose X-Forwarded-For/-Proto are believed (default: none)"})
    storage_secret: str = field(default="", metadata={"help": "secret signing browser sessions (default: generated and kept in the data dir)"})
    federation_deadline: float = field(default=30.0, metadata={"help": "seconds one whole sync with one remote may take (connect, send, answer); a slower remote fails that sync, never the others"})
    federation_max_response: int = field(default=64 * 1024 * 1024, metadata={"help": "bytes a remote's sync answer may have; reading stops there and the remote is marked failing"})
    audit_max_rows: int = field(default=100_000, metadata={"help": "the federation audit log keeps at most this many events (the oldest go first)"})
    audit_max_days: float = field(default=365.0, metadata={"help": "federation audit events older than this many days are pruned"})
    demo: bool = field(default=False, metadata={"help": "seed a generated demo (patients, CT/MR, SEGs, datasets, tags, workflows) once per data dir, in the background"})

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL, defaulting to a SQLite file inside the data dir."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'vireo.db').resolve()}"

    @property
    def dags_path(self) -> Path:
        return Path(self.dags_dir) if self.dags_dir else self.data_dir / "dags"

    @property
    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)

    @property
    def receiver_workers(self) -> int:
        """Receiver worker processes to run: the setting, or one per CPU core when it is negative."""
        return self.dicom_workers if self.dicom_workers >= 0 else (os.cpu_count() or 1)

    @property
    def allowed_calling_aets(self) -> frozenset[str]:
        return frozenset(a.strip() for a in self.dicom_allowed_calling_aets.split(",") if a.strip())


    @property
    def move_destinations(self) -> dict[str, tuple[str, int]]:
        """C-MOVE destinations by AE title; raises ValueError naming a malformed entry."""
        return parse_destinations(self.dicom_destinations)

    @property
    def public_base(self) -> str:
        """VIREO_PUBLIC_URL without a trailing slash ('' when unset): absolute links start with it."""
        return self.public_url.strip().rstrip("/")

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]


# What one remote may cost a sync (federation/poller.py) and how much audit log is kept (federation/audit.py).
FEDERATION_LIMITS = ("federation_deadline", "federation_max_response", "audit_max_rows", "audit_max_days")

# Sizes that bound what one request or one import may make Vireo hold (app/body_limits.py, ingest/import_limits.py).
SIZE_LIMITS = ("max_request_bytes", "max_upload_request_bytes", "max_stow_request_bytes", "import_max_unpacked_bytes", "nifti_max_voxels")


def parse_destinations(text: str) -> dict[str, tuple[str, int]]:
    """`AE=host:port, AE2=host:port` → {AE: (host, port)}."""
    destinations: dict[str, tuple[str, int]] = {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        ae, equals, address = entry.partition("=")
        host, colon, port = address.strip().rpartition(":")
        if not equals or not colon or not ae.strip() or not host or not port.isdigit() or len(ae.strip()) > 16:
            raise ValueError(f"{entry!r} is not AE=host:port (AE titles have at most 16 characters)")
        destinations[ae.strip()] = (host.strip("[]"), int(port))
    return destinations


def _env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


def _convert(kind: Any, raw: str) -> Any:
    if kind in (bool, "bool"):
        word = str(raw).strip().lower()
        if word not in TRUE_WORDS | FALSE_WORDS:
            raise ValueError("expected 1/0, true/false, yes/no or on/off")
        return word in TRUE_WORDS
    if kind in (int, "int"):
        return int(raw)
    if kind in (float, "float"):
        return float(raw)
    if kind in (Path, "Path"):
        return Path(raw)
    return raw


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one `--option` per setting, documenting its environment variable and default."""
    for f in fields(Settings):
        default = None if f.default is MISSING else f.default
        shown = "" if f.name in ("admin_password", "storage_secret") else f" (default: {default})" if default not in (None, "") else ""
        if f.type in (bool, "bool"):  # a switch: `--demo`, or VIREO_DEMO=1
            parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None, action="store_const", const="1",
                                help=f"{f.metadata.get('help', '')}; env {_env_name(f.name)}=1")
            continue
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            metavar=_env_name(f.name),
            help=f"{f.metadata.get('help', '')}{shown}; env {_env_name(f.name)}",
        )


def load_settings(options: argparse.Namespace | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Settings from options over environment over defaults, with clear errors for bad values."""
    environ = dict(os.environ) if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = getattr(options, f.name, None) if options is not None else None
        if raw is None:
            raw = environ.get(_env_name(f.name))
        if raw is None or raw == "":
            continue
        try:
            values[f.name] = _convert(f.type, raw)
        except ValueError as exc:
            raise SystemExit(f"invalid value for {_env_name(f.name)} / --{f.name.replace('_', '-')}: {raw!r} ({exc})") from exc
    settings = Settings(**values)
    for name in SIZE_LIMITS:
        if getattr(settings, name) <= 0:
            raise SystemExit(f"invalid value for {_env_name(name)} / --{name.replace('_', '-')}: {getattr(settings, name)} (a limit must be at least 1)")
    for name in FEDERATION_LIMITS:
        if not getattr(settings, name) > 0:
            raise SystemExit(f"invalid value for {_env_name(name)} / --{name.replace('_', '-')}: {getattr(settings, name)} (it must be above 0)")
    if settings.dicom_max_connections_per_peer < 1:
        raise SystemExit(f"invalid value for VIREO_DICOM_MAX_CONNECTIONS_PER_PEER / --dicom-max-connections-per-peer: {settings.dicom_max_connections_per_peer} (a limit must be at least 1)")
    try:
        settings.move_destinations
    except ValueError as exc:
        raise SystemExit(f"invalid value for VIREO_DICOM_DESTINATIONS / --dicom-destinations: {exc}") from exc
    problem = public_url_problem(settings.public_url)
    if problem:
        raise SystemExit(f"invalid value for VIREO_PUBLIC_URL / --public-url: {settings.public_url!r} ({problem})")
    from app.cors import origins_problem
    from app.proxies import parse_trusted_proxies

    problem = origins_problem(settings.cors_origin_list)
    if problem:
        raise SystemExit(f"invalid value for VIREO_CORS_ORIGINS / --cors-origins: {problem}")
    try:
        parse_trusted_proxies(settings.trusted_proxies)
    except ValueError as exc:
        raise SystemExit(f"invalid value for VIREO_TRUSTED_PROXIES / --trusted-proxies: {exc}") from exc
    return settings


def public_url_problem(url: str) -> str | None:
    """Why `url` cannot be the public base URL (None when it can, or is unset): links built on it must be absolute."""
    if not url.strip():
        return None
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return "expected an absolute http:// or https:// URL, e.g. https://pacs.example.org/vireo"
    if parts.query or parts.fragment:
        return "a base URL has no ?query or #fragment"
    return None
