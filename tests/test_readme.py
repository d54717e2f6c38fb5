"""The README's first screen, done as a newcomer would: its own commands, in a fresh copy and venv.

The commands are read from the README's code blocks marked `<!-- readme-test: serve -->` and
`<!-- readme-test: tour -->`, never copied into this file. The serve block runs in the background
in a copy of the repository (its default data dir `./data` is therefore fresh too), health is
polled, the demo seeds, the Datasets page is photographed for the README
(`docs/screenshot-datasets.png`), then the tour's blocks run one after the other against it.

The two ports are the only thing changed: free ports replace 8080 and 11112, so the test can run
beside anything else. The fresh `.venv` is made by `run.sh` itself; to keep the suite fast it sees
the project's already installed dependencies through a .pth file, so `run.sh`'s
`pip install -e .` has nothing to download, and the checkout's installed OHIF through a link (set VIREO_README_FULL_INSTALL=1 to install everything
from the package index, as on a new machine: a minute or two more).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.vireo import ROOT, free_port

README = ROOT / "README.md"
SCREENSHOT = ROOT / "docs" / "screenshot-datasets.png"
MARKED_BLOCK = re.compile(r"<!-- readme-test: (?P<kind>serve|tour) -->\s*\n\s*```bash\n(?P<body>.*?)\n\s*```", re.S)


def readme_blocks() -> dict[str, list[str]]:
    """The marked bash blocks of the README, by kind, in order (indentation of list items removed)."""
    blocks: dict[str, list[str]] = {"serve": [], "tour": []}
    for match in MARKED_BLOCK.finditer(README.read_text()):
        lines = match["body"].splitlines()
        indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
        blocks[match["kind"]].append("\n".join(line[indent:] for line in lines))
    return blocks


@dataclass
class Newcomer:
    folder: Path
    url: str
    http_port: int
    dicom_port: int
    exports: str  # the serve block's `export` lines: "the same export" in the tour's terminal
    password: str
    serve: str
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """The serve block, in the background, as its own process group (run.sh and the Vireo it execs)."""
        env = {**_clean_env(), "VIREO_HTTP_PORT": str(self.http_port), "VIREO_DICOM_PORT": str(self.dicom_port)}
        self.log.write_text("")
        self.process = subprocess.Popen(["bash", "-c", f"set -euo pipefail\n{self.serve}\n"], cwd=self.folder, env=env,
                                        stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def localize(self, command: str) -> str:
        return command.replace("127.0.0.1:8080", f"127.0.0.1:{self.http_port}").replace("127.0.0.1 11112", f"127.0.0.1 {self.dicom_port}")

    def run(self, block: str) -> str:
        script = f"set -euo pipefail\n{self.exports}\n{self.localize(block)}\n"
        done = subprocess.run(["bash", "-c", script], cwd=self.folder, env=_clean_env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"README command failed ({done.returncode}):\n{block}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        return done.stdout

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=("admin", self.password), timeout=30)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIREO_") and k not in ("PYTEST_CURRENT_TEST", "NICEGUI_USER_SIMULATION", "VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(ROOT / ".venv")))
    return env


def _copy_checkout(target: Path) -> None:
    """The repository as a clone has it (tracked files), without .venv, data or caches."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False)
    if listed.returncode == 0 and listed.stdout:
        for name in listed.stdout.decode().split("\0"):
            source = ROOT / name
            if name and source.is_file() and not name.startswith(("tests/", "bench/", "docs/")):
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)
    else:  # not a git checkout: the same, by folder
        shutil.copytree(ROOT, target, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".venv", "data", "tests", "bench", "docs", "build", "*.egg-info", "__pycache__", ".git"))


def _prepare_fast_venv(folder: Path) -> None:
    """A fresh .venv whose interpreter also sees the project's installed dependencies (not Vireo itself)."""
    python = shutil.which("python3.11") or shutil.which("python3") or sys.executable
    subprocess.run([python, "-m", "venv", str(folder / ".venv")], check=True, timeout=120)
    site = subprocess.run([str(folder / ".venv" / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _share_ohif(folder)


def _share_ohif(folder: Path) -> None:
    """The checkout's installed OHIF, linked into the copy, so that run.sh's `app.ohif install` finds it there and
    returns at once instead of fetching and unpacking it with npm again (~10 s; the full install does fetch it)."""
    from app.ohif import location

    installed = location.installed(ROOT / ".vireo" / "ohif")
    if installed is not None:
        (folder / ".vireo" / "ohif").mkdir(parents=True, exist_ok=True)
        (folder / ".vireo" / "ohif" / installed.name).symlink_to(installed, target_is_directory=True)


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Newcomer]:
    blocks = readme_blocks()
    assert len(blocks["serve"]) == 1, "the README marks exactly one serve block"
    serve = blocks["serve"][0]
    assert "bash run.sh" in serve
    exports = "\n".join(line for line in serve.splitlines() if line.startswith("export "))
    password = re.search(r"VIREO_ADMIN_PASSWORD=(\S+)", exports)
    assert password, "the serve block sets the admin password the tour uses"
    folder = tmp_path_factory.mktemp("newcomer") / "vireo"
    folder.mkdir()
    _copy_checkout(folder)
    if not os.environ.get("VIREO_README_FULL_INSTALL"):
        _prepare_fast_venv(folder)
    http_port, dicom_port = free_port(), free_port()
    person = Newcomer(folder, f"http://127.0.0.1:{http_port}", http_port, dicom_port, exports, password[1], serve, folder.parent / "run.log")
    started = time.monotonic()
    person.start()
    try:
        _wait_for(person, lambda: httpx.get(f"{person.url}/api/health", timeout=1).status_code == 200, 600, "health")
        print(f"set-up and start by the README's run command: {time.monotonic() - started:.1f} s")
        yield person
    finally:
        person.stop()


def _wait_for(person: Newcomer, ready, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert person.process is not None and person.process.poll() is None, f"the README's run command exited:\n{person.log.read_text()[-4000:]}"
        try:
            if ready():
                return
        except (httpx.HTTPError, OSError, ValueError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"{what}: not reached within {timeout} s\n{person.log.read_text()[-4000:]}")


def test_demo_seeds_and_the_datasets_page_shows_it(newcomer: Newcomer, browser_page) -> None:  # type: ignore[no-untyped-def]
    page = browser_page
    page.goto(f"{newcomer.url}/login")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(newcomer.password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{newcomer.url}/")
    banner = page.get_by_test_id("demo-banner")
    banner.wait_for(state="visible", timeout=10_000)  # seeding takes half a minute: the page says how far it got
    first_step = page.get_by_test_id("demo-step").inner_text()
    assert first_step.startswith(("Generating", "Writing", "Importing", "Tagging", "Running")), first_step
    banner.wait_for(state="hidden", timeout=300_000)  # and steps aside once the demo is in
    marker = json.loads((newcomer.folder / "data" / "demo" / "seeded.json").read_text())
    print(f"demo seeded in {marker['seconds']} s")
    with newcomer.client() as c:
        summary = c.get("/api/aggregations", params=[("field", "Modality"), ("field", "dataset")]).json()
        workflows = c.get("/api/workflows").json()
    assert summary["patients"] >= 5 and {"CT", "MR", "SEG"} <= set(summary["fields"]["Modality"])
    assert {"chest-abdomen-ct", "brain-mr", "teaching-cases", "with-segmentations", "nifti-import"} <= set(summary["fields"]["dataset"])
    items = workflows["items"] if isinstance(workflows, dict) else workflows
    finished = {w["dag_id"] for w in items if w["jobs"] and all(j["status"] == "finished" for j in w["jobs"])}
    assert {"tag-dataset", "collect-metadata", "convert-niftis-to-dicoms-and-import-to-pacs"} <= finished
    page.goto(f"{newcomer.url}/")  # as the newcomer sees it next time: no banner, no notification
    page.get_by_text(f"all {summary['series']} matching series").wait_for()
    page.wait_for_function("Array.from(document.querySelectorAll('img')).filter(i => i.complete && i.naturalWidth > 0).length >= 8", timeout=30_000)
    page.wait_for_function("document.querySelectorAll('[data-testid=dashboard] .js-plotly-plot .bars').length >= 2", timeout=30_000)
    page.wait_for_timeout(500)  # plotly's bars grow in
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))


def test_the_tour_runs_as_written(newcomer: Newcomer) -> None:
    tour = readme_blocks()["tour"]
    assert len(tour) >= 4, "the README's tour marks its commands"
    assert any("dcmsend" in b for b in tour) and any("/api/uploads" in b for b in tour)
    # As the README says: the tour starts once the demo is in (it writes the tour's example files last).
    _wait_for(newcomer, lambda: (newcomer.folder / "data" / "demo" / "seeded.json").exists(), 300, "the demo seeded")
    outputs = [newcomer.run(block) for block in tour]
    with newcomer.client() as c:
        sent = c.get("/api/series", params={"dataset": "my-dataset"}).json()
        assert sent["total"] == 1 and sent["items"][0]["Modality"] == "CT"
        found = _json_values(outputs[1])[0]
        assert isinstance(found, dict)
        assert found["total"] >= 2 and all(s["Modality"] == "MR" and "lesion" in s["tags"] for s in found["items"])
        started = [v for out in outputs[2:] for v in _json_values(out) if isinstance(v, dict) and "jobs" in v]
        assert {w["dag_id"] for w in started} == {"collect-metadata", "convert-niftis-to-dicoms-and-import-to-pacs"}
        for workflow in started:
            deadline = time.monotonic() + 120
            while True:
                states = {j["status"] for j in c.get(f"/api/workflows/{workflow['id']}").json()["jobs"]}
                if states == {"finished"}:
                    break
                assert not states & {"failed", "aborted"}, f"{workflow['dag_id']}: {states}"
                assert time.monotonic() < deadline, f"{workflow['dag_id']} did not finish: {states}"
                time.sleep(0.5)
        imported = c.get("/api/series", params={"dataset": "my-niftis"}).json()
        assert sorted(s["Modality"] for s in imported["items"]) == ["MR", "SEG"]


def test_a_second_start_reuses_the_demo(newcomer: Newcomer) -> None:
    """Stopped and started again with the same command and data dir, Vireo finds its demo and seeds nothing."""
    with newcomer.client() as c:
        before = c.get("/api/series", params={"limit": 1}).json()["total"]
    newcomer.stop()
    newcomer.start()
    _wait_for(newcomer, lambda: httpx.get(f"{newcomer.url}/api/health", timeout=1).status_code == 200, 120, "health after the restart")
    text = newcomer.log.read_text()
    assert "demo: reusing" in text and "demo: seeding" not in text, text[-3000:]
    with newcomer.client() as c:
        assert c.get("/api/series", params={"limit": 1}).json()["total"] == before


def _json_values(text: str) -> list[object]:
    """Every JSON value curl printed, one after the other (curl adds no newline between answers)."""
    decoder, values, at = json.JSONDecoder(), [], 0
    while True:
        at = text.find("{", at)
        if at < 0:
            return values
        value, at = decoder.raw_decode(text, at)
        values.append(value)
