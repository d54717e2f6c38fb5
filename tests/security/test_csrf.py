"""Cross-site request forgery from a page on another port of 127.0.0.1, in a real Chromium that is logged in to Vireo.

Cookies are scoped by host, not port, and the two origins are same-site, so `SameSite=Lax`
lets the browser attach Vireo's session cookie to the attacker's requests. The attack page
restarts a job and writes into the upload area the ways a page can without a CORS preflight
(a no-cors fetch, a multipart POST, a form posted into an iframe); every one must get 403
and change nothing, while Vireo's own pages keep working (their fetch sends the page's token).
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import socketio

from tests.security.browser_login import cookie_client, cookies_of, log_in
from tests.support.vireo import VireoProcess, free_port
from tests.support.workflows import create, dags_folder, wait_job

pytestmark = pytest.mark.slow

ATTACK_PAGE = """<!doctype html><html><body><h1>cute cats</h1>
<iframe name="sink" style="display:none"></iframe>
<form id="restart" method="post" action="{vireo}/api/jobs/{job}/restart" target="sink"></form>
<script>
(async () => {{
  const tries = [];
  tries.push(fetch('{vireo}/api/jobs/{job}/restart', {{method: 'POST', mode: 'no-cors', credentials: 'include'}}).catch(() => null));
  const form = new FormData();
  form.append('file', new Blob(['forged'], {{type: 'application/octet-stream'}}), 'forged.bin');
  tries.push(fetch('{vireo}/api/uploads', {{method: 'POST', body: form, mode: 'no-cors', credentials: 'include'}}).catch(() => null));
  tries.push(fetch('{vireo}/api/uploads/forged-put.bin', {{method: 'PUT', body: 'forged', credentials: 'include'}}).catch(() => null));
  await Promise.all(tries);
  document.getElementById('restart').submit();
  document.title = 'attacked';
}})();
</script></body></html>"""


@pytest.fixture
def attack_site() -> Iterator[Callable[[str], str]]:
    """A tiny web server on another port of 127.0.0.1; `serve(html)` returns the page's URL."""
    pages: dict[str, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, "").encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def serve(html: str) -> str:
        pages["/cats.html"] = html
        return f"http://127.0.0.1:{server.server_address[1]}/cats.html"

    yield serve
    server.shutdown()


def test_a_page_on_another_port_cannot_restart_a_job_or_write_an_upload(  # type: ignore[no-untyped-def]
    start_vireo: Callable[..., VireoProcess], browser_page, attack_site: Callable[[str], str], tmp_path: Path
) -> None:
    vireo = start_vireo(VIREO_DAGS_DIR=str(dags_folder(tmp_path / "dags")))
    with vireo.client() as admin:
        job_id = create(admin, dag_id="test-echo", name="victim's job")["jobs"][0]["id"]
        wait_job(admin, job_id, {"finished"})
    page = browser_page
    log_in(page, vireo, target="/workflows")
    statuses: list[tuple[str, str, int]] = []
    page.on("response", lambda r: statuses.append((r.request.method, r.url, r.status)) if r.url.startswith(vireo.url) else None)

    page.goto(attack_site(ATTACK_PAGE.format(vireo=vireo.url, job=job_id)))
    page.wait_for_function("document.title === 'attacked'", timeout=15000)
    deadline = time.monotonic() + 10
    while len([s for s in statuses if s[0] == "POST"]) < 3 and time.monotonic() < deadline:
        page.wait_for_timeout(100)

    forged = [s for s in statuses if s[0] in ("POST", "PUT")]
    assert len([s for s in forged if s[0] == "POST"]) == 3, statuses  # the no-cors restart, the upload and the form
    assert all(status == 403 for _, _, status in forged), forged
    with vireo.client() as admin:
        job = admin.get(f"/api/jobs/{job_id}").json()
        assert job["run"] == 1 and job["status"] == "finished", job
        assert [u["path"] for u in admin.get("/api/uploads").json()] == []
    assert not (vireo.data_dir / "uploads" / "forged.bin").exists()

    # the same forged request by hand, with the browser's cookies: refused with a reason in plain words
    with cookie_client(vireo, cookies_of(page)) as hand:
        refused = hand.post(f"/api/jobs/{job_id}/restart", headers={"Origin": "http://127.0.0.1:1"})
        assert refused.status_code == 403 and "another site" in refused.json()["detail"]
        no_token = hand.post(f"/api/jobs/{job_id}/restart", headers={"Origin": vireo.url})
        assert no_token.status_code == 403 and "CSRF token" in no_token.json()["detail"]
        no_origin = hand.post(f"/api/jobs/{job_id}/restart", headers={"X-Vireo-CSRF": "guess"})
        assert no_origin.status_code == 403 and "Origin" in no_origin.json()["detail"]

    # Vireo's own page: the same request with the page's token works; without it, it does not
    page.goto(f"{vireo.url}/workflows")
    page.wait_for_selector('meta[name="vireo-csrf"]', state="attached")
    own = page.evaluate("""async (url) => {
        const token = document.querySelector('meta[name="vireo-csrf"]').content;
        const bare = await fetch(url, {method: 'POST'});
        const sent = await fetch(url, {method: 'POST', headers: {'X-Vireo-CSRF': token}});
        return [bare.status, sent.status];
    }""", f"{vireo.url}/api/jobs/{job_id}/restart")
    assert own == [403, 200]
    with vireo.client() as admin:
        assert admin.get(f"/api/jobs/{job_id}").json()["run"] == 2
    # Basic and bearer callers (scripts) need no token
    with vireo.client() as admin:
        wait_job(admin, job_id, {"finished"})
        assert admin.post(f"/api/jobs/{job_id}/restart").status_code == 200


def test_a_page_of_another_origin_cannot_open_vireos_websocket(start_vireo: Callable[..., VireoProcess]) -> None:
    vireo = start_vireo()
    for origin, allowed in (("http://127.0.0.1:1", False), ("null", False), (vireo.url, True)):
        client = socketio.Client(reconnection=False)
        try:
            client.connect(vireo.url, headers={"Origin": origin}, transports=["polling"], socketio_path="/_nicegui_ws/socket.io", wait_timeout=5)
            connected = True
        except socketio.exceptions.ConnectionError:
            connected = False
        finally:
            client.disconnect()
        assert connected is allowed, origin


def test_basic_credentials_a_browser_remembered_do_not_work_from_another_site(vireo: VireoProcess) -> None:
    with vireo.client() as script:
        assert script.post("/api/datasets", json={"name": "by-script"}).status_code == 201  # no Origin: a script
        refused = script.post("/api/datasets", json={"name": "forged"}, headers={"Origin": "http://127.0.0.1:1"})
        assert refused.status_code == 403 and "another site" in refused.json()["detail"]
        assert script.post("/api/datasets", json={"name": "same-site"}, headers={"Origin": vireo.url}).status_code == 201
        names = {d["name"] for d in script.get("/api/datasets").json()}
    assert "forged" not in names and {"by-script", "same-site"} <= names
