"""Smoke tests for the shared test infrastructure (real PostgreSQL, real Chromium).

Browser tests are plain sync tests on purpose: Playwright's sync API must not
run inside an asyncio event loop.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import psycopg
import pytest
import sqlalchemy as sa

from tests.support.postgres import PostgresServer
from tests.support.vireo import free_port

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ postgres
def _roundtrip(url: str, rows: list[str]) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            # The database is fresh: the table must not exist yet.
            assert not sa.inspect(conn).has_table("items")
            conn.execute(sa.text("CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL)"))
            conn.execute(sa.text("INSERT INTO items (name) VALUES (:name)"), [{"name": r} for r in rows])
        with engine.connect() as conn:
            return list(conn.execute(sa.text("SELECT name FROM items ORDER BY id")).scalars())
    finally:
        engine.dispose()


@pytest.mark.parametrize("rows", [["alpha", "beta"], ["gamma"]])
def test_postgres_url_is_a_fresh_database_per_test(postgres_url: str, rows: list[str]) -> None:
    assert postgres_url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    # Same table name in both parametrizations: only passes if each test gets its own DB.
    assert _roundtrip(postgres_url, rows) == rows


def test_two_databases_are_isolated(postgres_server: PostgresServer) -> None:
    url_a = postgres_server.create_database("support_iso_a")
    url_b = postgres_server.create_database("support_iso_b")
    try:
        assert url_a.endswith("/support_iso_a") and url_b.endswith("/support_iso_b")
        assert _roundtrip(url_a, ["a1", "a2", "a3"]) == ["a1", "a2", "a3"]
        assert _roundtrip(url_b, ["b1"]) == ["b1"]
        # Leave a connection open: drop_database must still succeed (WITH FORCE).
        dangling = psycopg.connect(postgres_server.conninfo("support_iso_a"))
        with psycopg.connect(postgres_server.conninfo("support_iso_a")) as conn:
            assert conn.execute("SELECT count(*) FROM items").fetchone() == (3,)
    finally:
        postgres_server.drop_database("support_iso_a")
        postgres_server.drop_database("support_iso_b")
    dangling.close()
    with psycopg.connect(postgres_server.conninfo("postgres")) as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
    assert not names & {"support_iso_a", "support_iso_b"}


def test_server_listens_on_loopback_only(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.conninfo("postgres")) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute("SHOW fsync").fetchone() == ("off",)
        assert conn.execute("SHOW server_encoding").fetchone() == ("UTF8",)


# ------------------------------------------------------------------- browser
@pytest.fixture
def static_site(tmp_path):
    (tmp_path / "index.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>Vireo fixture page</title></head>"
        "<body><h1 id='hello'>Hello from http.server</h1></body></html>",
        encoding="utf-8",
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"http.server did not start on port {port}")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_browser_loads_page_and_screenshots(browser_page, static_site: str) -> None:
    response = browser_page.goto(static_site)
    assert response is not None and response.ok
    assert browser_page.title() == "Vireo fixture page"
    assert browser_page.inner_text("#hello") == "Hello from http.server"
    assert browser_page.viewport_size == {"width": 1400, "height": 900}
    png = browser_page.screenshot()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000
