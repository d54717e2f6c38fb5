"""A real, throw-away PostgreSQL server for tests (no mocks).

Uses Debian's server binaries (``/usr/lib/postgresql/<ver>/bin``), runs
``initdb`` into a fresh directory under /tmp and starts ``postgres`` in the
foreground as a child process, listening on 127.0.0.1 only on a free port,
with durability switched off for speed.  PostgreSQL refuses to run as root, so
when the effective uid is 0 both ``initdb`` and the server run as the
``postgres`` system user.

Fixtures (import them into a test module or conftest)::

    from tests.support.postgres import postgres_server, postgres_url  # noqa: F401

* ``postgres_server`` (session scope): a running :class:`PostgresServer`.
* ``postgres_url`` (function scope): URL of a fresh, empty database
  (``postgresql+psycopg://postgres@127.0.0.1:<port>/<name>``), dropped
  (``WITH (FORCE)``) after the test.
"""

from __future__ import annotations

import atexit
import glob
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.support.vireo import free_port

__all__ = [
    "PostgresServer",
    "PostgresUnavailable",
    "find_postgres_bindir",
    "postgres_server",
    "postgres_url",
]

INSTALL_HINT = (
    "PostgreSQL server binaries not found under /usr/lib/postgresql/<version>/bin. "
    "Run the tests with the test command from the project's README, which installs "
    "them (Debian package 'postgresql')."
)

_DB_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL binaries are missing."""


def find_postgres_bindir() -> Path:
    """Return the newest ``/usr/lib/postgresql/<ver>/bin`` holding initdb+postgres."""
    candidates = []
    for bindir in glob.glob("/usr/lib/postgresql/*/bin"):
        p = Path(bindir)
        if (p / "initdb").is_file() and (p / "postgres").is_file():
            try:
                version = float(p.parent.name)
            except ValueError:
                version = 0.0
            candidates.append((version, p))
    if not candidates:
        raise PostgresUnavailable(INSTALL_HINT)
    return max(candidates)[1]


def _check_db_name(name: str) -> str:
    if not _DB_NAME_RE.match(name):
        raise ValueError(f"invalid database name for tests: {name!r}")
    return name


class PostgresServer:
    """A private PostgreSQL instance in a temp dir.

    >>> server = PostgresServer(); server.start()
    >>> url = server.create_database("foo")   # postgresql+psycopg://postgres@127.0.0.1:<port>/foo
    >>> server.drop_database("foo"); server.stop()

    ``start()`` / ``stop()`` are idempotent; the instance is also a context
    manager.  ``stop()`` is registered with ``atexit`` as a safety net.
    """

    def __init__(self, *, startup_timeout: float = 30.0, bindir: Path | None = None) -> None:
        self.startup_timeout = startup_timeout
        self._bindir = bindir
        self.port: int | None = None
        self.base_dir: Path | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen | None = None
        self._log_file = None

    # ------------------------------------------------------------------ paths
    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            self._bindir = find_postgres_bindir()
        return self._bindir

    @property
    def data_dir(self) -> Path:
        assert self.base_dir is not None, "server not started"
        return self.base_dir / "data"

    @property
    def log_path(self) -> Path:
        assert self.base_dir is not None, "server not started"
        return self.base_dir / "postgres.log"

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, AssertionError):
            return "<no log>"

    # ------------------------------------------------------------- lifecycle
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> PostgresServer:
        if self.running:
            return self
        t0 = time.monotonic()
        bindir = self.bindir  # raises PostgresUnavailable early
        self.base_dir = Path(tempfile.mkdtemp(prefix="vireo-pg-", dir="/tmp"))
        os.chmod(self.base_dir, 0o755)  # traversable by the postgres user
        run_as = self._run_as_kwargs()
        if run_as:
            shutil.chown(self.base_dir, user="postgres", group="postgres")
        atexit.register(self.stop)
        try:
            self._initdb(bindir, run_as)
            last_error: Exception | None = None
            for _attempt in range(3):  # retry if someone grabbed our free port
                try:
                    self._launch(bindir, run_as)
                    break
                except _PortTaken as exc:
                    last_error = exc
            else:
                raise RuntimeError(f"PostgreSQL could not bind a port: {last_error}")
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _run_as_kwargs(self) -> dict:
        if os.geteuid() != 0:
            return {}
        # PostgreSQL refuses to run as root.
        return {"user": "postgres", "group": "postgres", "extra_groups": []}

    def _env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", TZ="UTC")
        if os.geteuid() == 0:
            env["HOME"] = str(self.base_dir)
        return env

    def _initdb(self, bindir: Path, run_as: dict) -> None:
        cmd = [
            str(bindir / "initdb"),
            "-D", str(self.data_dir),
            "-A", "trust",
            "-U", "postgres",
            "-E", "UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        ]
        res = subprocess.run(
            cmd, cwd=self.base_dir, env=self._env(), capture_output=True, text=True,
            timeout=120, **run_as,
        )
        if res.returncode != 0:
            raise RuntimeError(
                f"initdb failed (exit {res.returncode}): {' '.join(cmd)}\n"
                f"--- stdout ---\n{res.stdout}\n--- stderr ---\n{res.stderr}"
            )

    def _launch(self, bindir: Path, run_as: dict) -> None:
        self.port = free_port()
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.base_dir),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "logging_collector": "off",
            "log_min_messages": "warning",
            "timezone": "UTC",
        }
        cmd = [str(bindir / "postgres"), "-D", str(self.data_dir)]
        for key, value in settings.items():
            cmd += ["-c", f"{key}={value}"]
        if self._log_file is not None:
            self._log_file.close()
        self._log_file = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            cmd,
            cwd=self.base_dir,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal is handled by us, not postgres
            **run_as,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        last_exc: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                log = self.read_log()
                if "could not bind" in log or "Address already in use" in log:
                    raise _PortTaken(f"port {self.port} taken")
                raise RuntimeError(
                    f"PostgreSQL exited with code {self._proc.returncode} during startup.\n"
                    f"--- server log ({self.log_path}) ---\n{log}"
                )
            try:
                with psycopg.connect(self.conninfo("postgres"), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                last_exc = exc
                time.sleep(0.05)
        raise RuntimeError(
            f"PostgreSQL did not accept connections on 127.0.0.1:{self.port} within "
            f"{self.startup_timeout:.0f}s (last error: {last_exc}).\n"
            f"--- server log ({self.log_path}) ---\n{self.read_log()}"
        )

    def stop(self) -> None:
        """Immediate shutdown (SIGQUIT) and removal of the temp dir. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGQUIT)  # "immediate" shutdown mode
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)
            self.base_dir = None
        try:
            atexit.unregister(self.stop)
        except Exception:  # pragma: no cover
            pass

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -------------------------------------------------------------- databases
    def conninfo(self, database: str = "postgres") -> str:
        """libpq conninfo string (for plain ``psycopg.connect``)."""
        if self.port is None:
            raise RuntimeError("server not started")
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def url(self, database: str) -> str:
        """SQLAlchemy URL: ``postgresql+psycopg://postgres@127.0.0.1:<port>/<database>``."""
        if self.port is None:
            raise RuntimeError("server not started")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        _check_db_name(name)
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, terminating any connections still open to it."""
        _check_db_name(name)
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


class _PortTaken(RuntimeError):
    pass


# ----------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL server shared by the whole session."""
    try:
        find_postgres_bindir()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a fresh, empty database for this test; dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = postgres_server.create_database(name)
    try:
        yield url
    finally:
        postgres_server.drop_database(name)
