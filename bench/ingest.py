#!/usr/bin/env python3
"""Ingest benchmark: Vireo against Orthanc and DCMTK's storescp, all fed by dcmsend.

Generates (once, cached) a synthetic CT/MR dataset with ``tests/factories.write_dataset``
(defaults: 24 series, ~2,600 instances, ~1 GB, CT 512x512 int16), then for every target
(vireo, orthanc, storescp) and every sender set-up (``plain``: dcmsend as users run it,
without TCP_NODELAY in its environment; ``nodelay``: TCP_NODELAY=1 in dcmsend's
environment, which Debian's DCMTK reads) it:

* starts the server fresh (new storage/data dir) on 127.0.0.1,
* runs ``dcmsend -v 127.0.0.1 PORT --scan-directories --call AET --scan-pattern '*.dcm'
  --recurse DATA`` and times it (instances/s = instances / wall time of dcmsend),
* checks dcmsend's status summary (every instance sent with SUCCESS, else it fails loudly),
* polls the server's index until every series is there with its full instance count
  ("searchable" = time from dcmsend's exit to that moment; Vireo: /api/series,
  Orthanc: /statistics; storescp has no index),
* records the server's CPU time and peak RSS (VmHWM, process tree) and the CPU used by
  anything else on the machine meanwhile ("foreign CPU": benchmark on an idle machine).

Servers' environments (printed with the results): Orthanc and storescp run as packaged,
i.e. WITHOUT TCP_NODELAY in their own environment (``--server-nodelay`` sets it for them);
Vireo never gets TCP_NODELAY (pynetdicom does not read it). All proxy variables are removed.

Everything runs in a private network namespace whose only interface is ``lo``: when not
already in one, the script re-executes itself under ``unshare -n`` (needs root) and brings
``lo`` up. Orthanc 1.10 binds all interfaces, which is why the namespace is required.

Usage (from the repository root):
    .venv/bin/python bench/ingest.py --small            # quick smoke run (~1 min)
    .venv/bin/python bench/ingest.py                    # full run (~10 min on 2 cores)
    .venv/bin/python bench/ingest.py --only vireo,orthanc --repeat 3 --json out.json
    .venv/bin/python bench/ingest.py --profile /tmp/prof  # + one py-spy'd Vireo run
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
CACHE_ROOT = Path(tempfile.gettempdir()) / "vireo-ingest-bench"
NETNS_MARK = "VIREO_BENCH_NETNS"
TARGETS = ("vireo", "orthanc", "storescp")
SENDER_ENVS = ("plain", "nodelay")
MANIFEST = "vireo-bench-manifest.json"
ADMIN_PASSWORD = "bench-admin-pw"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

# Targets of the issue.
TARGET_RATIO = 1.0  # Vireo / Orthanc instances/s, per sender set-up
TARGET_SEARCHABLE_S = 2.0
TARGET_RSS_MB = 500.0  # MB = 10^6 bytes, like every MB in this script

# Never let a proxy variable or a stray TCP_NODELAY leak into a child.
_SCRUB = {"TCP_NODELAY", "http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
          "ALL_PROXY", "no_proxy", "NO_PROXY", "PYTHONSTARTUP"}
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never use a proxy


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(RuntimeError):
    pass


# --------------------------------------------------------------------------
# Network namespace
# --------------------------------------------------------------------------


def _interfaces() -> set[str]:
    """Interfaces of *this process's* network namespace (/sys/class/net would show the mounter's)."""
    with open("/proc/self/net/dev") as f:
        return {line.split(":", 1)[0].strip() for line in f.readlines()[2:] if ":" in line}


def ensure_private_netns() -> None:
    """Re-exec under `unshare -n` unless the only interface is lo; then bring lo up."""
    if _interfaces() - {"lo"}:
        if os.environ.get(NETNS_MARK):
            raise SystemExit("bench: still see non-loopback interfaces after unshare -n; refusing to run")
        if os.geteuid() != 0:
            raise SystemExit("bench: needs root to create a private network namespace (unshare -n)")
        python = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
        env = dict(os.environ, **{NETNS_MARK: "1"})
        os.execvpe("unshare", ["unshare", "-n", "--", python, str(Path(__file__).resolve()), *sys.argv[1:]], env)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    if _interfaces() != {"lo"}:
        raise SystemExit(f"bench: unexpected interfaces in the namespace: {sorted(_interfaces())}")


# --------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------


@dataclass
class Dataset:
    path: Path
    series: dict[str, int]  # SeriesInstanceUID -> instance count
    instances: int
    bytes: int
    sizes: dict[str, int]  # "512x512 CT" -> count
    params: dict[str, Any]

    def describe(self) -> str:
        mix = ", ".join(f"{n} x {k}" for k, n in sorted(self.sizes.items(), key=lambda kv: -kv[1]))
        return (f"{self.instances} instances in {len(self.series)} series, {self.bytes / 1e9:.2f} GB "
                f"({mix}); {self.path}")


def dataset_params(args: argparse.Namespace) -> dict[str, Any]:
    if args.small:
        p: dict[str, Any] = {"patients": 1, "studies_per_patient": 2, "series_per_study": 2, "ct_slices": (20, 30),
                             "mr_slices": (10, 20), "ct_size": 64, "mr_size": 32, "seed": 0}
    else:
        p = {"patients": 4, "studies_per_patient": 2, "series_per_study": 3, "ct_slices": (108, 195),
             "mr_slices": (48, 96), "ct_size": 512, "mr_size": 256, "seed": 0}
    s = args.instances_scale
    if s != 1.0:
        p["ct_slices"] = tuple(max(1, round(v * s)) for v in p["ct_slices"])
        p["mr_slices"] = tuple(max(1, round(v * s)) for v in p["mr_slices"])
    return p


def _scan_existing(path: Path) -> Dataset:
    """Manifest of a directory of *.dcm files nobody told us about (headers only)."""
    from pydicom import dcmread

    series: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    total = 0
    for f in sorted(path.rglob("*.dcm")):
        ds = dcmread(f, stop_before_pixels=True, specific_tags=["SeriesInstanceUID", "Rows", "Columns", "Modality"])
        series[str(ds.SeriesInstanceUID)] += 1
        sizes[f"{ds.get('Rows', '?')}x{ds.get('Columns', '?')} {ds.get('Modality', '?')}"] += 1
        total += f.stat().st_size
    return Dataset(path, dict(series), sum(series.values()), total, dict(sizes), {"scanned": True})


def _generate(path: Path, params: dict[str, Any]) -> Dataset:
    sys.path.insert(0, str(REPO))
    from tests.factories import write_dataset  # type: ignore[import-not-found]

    log(f"generating dataset {params} in {path} ...")
    t0 = time.perf_counter()
    made = write_dataset(path, **params)
    series = {s.series_uid: len(s.paths) for s in made}
    sizes: Counter[str] = Counter()
    for s in made:
        side = params["ct_size"] if s.modality == "CT" else params["mr_size"]
        sizes[f"{side}x{side} {s.modality}"] += len(s.paths)
    total = sum(p.stat().st_size for s in made for p in s.paths)
    if any(p.suffix != ".dcm" for s in made for p in s.paths):
        raise BenchError("factory wrote files not named *.dcm: dcmsend's --scan-pattern would miss them")
    log(f"generated in {time.perf_counter() - t0:.1f} s")
    ds = Dataset(path, series, sum(series.values()), total, dict(sizes), params)
    (path / MANIFEST).write_text(json.dumps(asdict(ds), default=str, indent=1))
    return ds


def _load_manifest(path: Path) -> Dataset | None:
    m = path / MANIFEST
    if not m.exists():
        return None
    d = json.loads(m.read_text())
    d["path"] = path
    return Dataset(**d)


def prepare_dataset(args: argparse.Namespace) -> Dataset:
    params = dataset_params(args)
    if args.data:
        path = Path(args.data).resolve()
        found = _load_manifest(path)
        if found:
            return found
        if path.exists() and any(path.rglob("*.dcm")):
            log(f"scanning existing *.dcm files under {path} ...")
            return _scan_existing(path)
        path.mkdir(parents=True, exist_ok=True)
        return _generate(path, params)
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    path = CACHE_ROOT / f"data-{key}"
    found = _load_manifest(path)
    if found:
        return found
    partial = CACHE_ROOT / f"data-{key}.partial-{os.getpid()}"
    partial.mkdir(parents=True)
    attempts = 3
    for attempt in range(1, attempts + 1):
        try:
            ds = _generate(partial, params)
            break
        except (ImportError, AttributeError, TypeError) as exc:  # factories.py may be mid-edit
            if attempt == attempts:
                raise
            log(f"tests.factories failed ({exc!r}); retrying in 120 s")
            shutil.rmtree(partial)
            partial.mkdir()
            sys.modules.pop("tests.factories", None)
            time.sleep(120)
    shutil.rmtree(path, ignore_errors=True)
    partial.rename(path)
    ds.path = path
    (path / MANIFEST).write_text(json.dumps(asdict(ds), default=str, indent=1))
    return ds


def warm_page_cache(ds: Dataset) -> None:
    """Read every file once so no target pays for the first read from disk."""
    for f in ds.path.rglob("*.dcm"):
        with open(f, "rb") as fh:
            while fh.read(1 << 20):
                pass


# --------------------------------------------------------------------------
# /proc helpers: CPU and memory of a process tree, machine-wide CPU
# --------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()  # [0] is field 3 (state)
    except OSError:
        return None


def tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            f = _stat_fields(int(entry))
            if f:
                children[int(f[1])].append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_cpu_seconds(root: int) -> float:
    """utime+stime of the tree (threads included) plus reaped children's (cutime+cstime)."""
    total = 0
    for pid in tree_pids(root):
        f = _stat_fields(pid)
        if f:
            total += int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if pid == root else 0)
    return total / CLK_TCK


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def machine_busy_seconds() -> float:
    """CPU time spent by this machine (not steal: that is another VM's)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = (v + [0] * 7)[:7]
    return (user + nice + system + irq + softirq) / CLK_TCK


def cpu_snapshot() -> dict[int, tuple[str, float]]:
    """Every process's own CPU so far (threads included, reaped children not), to name who else was busy."""
    snap = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    raw = f.read()
            except OSError:
                continue
            comm = raw[raw.find("(") + 1 : raw.rfind(")")]
            fl = raw.rsplit(")", 1)[1].split()
            snap[int(entry)] = (comm, (int(fl[11]) + int(fl[12])) / CLK_TCK)  # own threads only
    return snap


def busiest(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], exclude: set[int],
            top: int = 4) -> list[tuple[str, float]]:
    used: Counter[int] = Counter()
    for pid, (comm, cpu) in after.items():
        if pid not in exclude:
            used[pid] += cpu - before.get(pid, (comm, 0.0))[1]
    out = []
    for pid, v in used.most_common(top):
        if v >= 0.05:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:80]
            except OSError:
                cmd = after[pid][0]
            out.append((f"{pid} {cmd or after[pid][0]}", round(v, 2)))
    return out


def self_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class MemorySampler:
    """Peak memory of a process tree: each pid's VmHWM (kept after it exits) and sampled tree VmRSS."""

    def __init__(self, root: int, interval: float = 0.2) -> None:
        self.root = root
        self.interval = interval
        self.hwm_kb: dict[int, int] = {}
        self.peak_tree_rss_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> MemorySampler:
        self._thread.start()
        return self

    def sample(self) -> None:
        rss = 0
        for pid in tree_pids(self.root):
            hwm = _status_kb(pid, "VmHWM")
            if hwm:
                self.hwm_kb[pid] = max(self.hwm_kb.get(pid, 0), hwm)
            rss += _status_kb(pid, "VmRSS")
        self.peak_tree_rss_kb = max(self.peak_tree_rss_kb, rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self.sample()
        main = self.hwm_kb.get(self.root, 0)
        children = sum(v for pid, v in self.hwm_kb.items() if pid != self.root)
        return {
            "main_hwm_mb": main * 1024 / 1e6,
            "children_hwm_mb": children * 1024 / 1e6,
            "peak_rss_mb": (main + children) * 1024 / 1e6,  # upper bound: sum of every pid's own peak
            "sampled_tree_rss_mb": self.peak_tree_rss_kb * 1024 / 1e6,
            "processes": len(self.hwm_kb),
        }


# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, auth: tuple[str, str] | None = None, timeout: float = 5.0) -> Any:
    req = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    with _HTTP.open(req, timeout=timeout) as r:
        return json.loads(r.read())


def child_env(nodelay: bool, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB and k != NETNS_MARK}
    if nodelay:
        env["TCP_NODELAY"] = "1"
    env.update(extra or {})
    return env


def dicom_echo(port: int, aet: str) -> bool:
    r = subprocess.run(["echoscu", "-q", "-to", "2", "-aec", aet, "127.0.0.1", str(port)], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=child_env(False))
    return r.returncode == 0


class Server:
    name = "?"
    aet = "ANY"
    env_note = ""

    def __init__(self, workdir: Path, server_nodelay: bool) -> None:
        self.workdir = workdir
        self.server_nodelay = server_nodelay
        self.proc: subprocess.Popen[bytes] | None = None
        self.dicom_port = free_port()
        self.log_path = workdir / f"{self.name}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> tuple[list[str], dict[str, str], Path | None]:
        raise NotImplementedError

    def start(self, timeout: float = 120.0) -> None:
        cmd, env, cwd = self.command()
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (open as long as the server runs)
        self.proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode} while starting; see {self.log_path}")
            if self.ready():
                return
            time.sleep(0.2)
        raise BenchError(f"{self.name} not ready after {timeout:.0f} s; see {self.log_path}")

    def ready(self) -> bool:
        return dicom_echo(self.dicom_port, self.aet)

    def searchable(self, ds: Dataset) -> bool | None:
        """True once the whole dataset is findable; None when the target has no index."""
        return None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        self.proc = None


class Vireo(Server):
    name = "vireo"
    aet = "BENCH"  # the called AE title names the dataset

    def __init__(self, workdir: Path, server_nodelay: bool) -> None:
        super().__init__(workdir, server_nodelay)
        self.http_port = free_port()
        self.data_dir = workdir / "vireo-data"
        self.env_note = "TCP_NODELAY unset (pynetdicom does not read it)"

    def command(self) -> tuple[list[str], dict[str, str], Path | None]:
        self.data_dir.mkdir()
        python = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
        env = child_env(False, {
            "VIREO_DATA_DIR": str(self.data_dir), "VIREO_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "VIREO_HTTP_PORT": str(self.http_port), "VIREO_DICOM_PORT": str(self.dicom_port),
            "VIREO_HOST": "127.0.0.1", "PYTHONUNBUFFERED": "1",
        })
        return [python, str(REPO / "main.py")], env, REPO

    def ready(self) -> bool:
        try:
            ok = http_get(f"http://127.0.0.1:{self.http_port}/api/health", timeout=2).get("status") == "ok"
        except (OSError, ValueError):
            return False
        return ok and dicom_echo(self.dicom_port, self.aet)

    def searchable(self, ds: Dataset) -> bool | None:
        page = http_get(f"http://127.0.0.1:{self.http_port}/api/series?limit=1000", auth=("admin", ADMIN_PASSWORD))
        have = {item.get("SeriesInstanceUID"): int(item.get("instances") or 0) for item in page.get("items", [])}
        return all(have.get(uid) == n for uid, n in ds.series.items())


class Orthanc(Server):
    name = "orthanc"
    aet = "ORTHANC"

    def __init__(self, workdir: Path, server_nodelay: bool) -> None:
        super().__init__(workdir, server_nodelay)
        self.http_port = free_port()
        self.env_note = ("TCP_NODELAY=1 (--server-nodelay)" if server_nodelay
                         else "TCP_NODELAY unset (as packaged: Nagle on at Orthanc's DCMTK side)")

    def command(self) -> tuple[list[str], dict[str, str], Path | None]:
        storage = self.workdir / "orthanc-storage"
        storage.mkdir()
        config = {
            "Name": "vireo-bench",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "StorageCompression": False,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "Plugins": [],
            # Everything else is Orthanc's default, e.g. SyncStorageArea true (fsync per file).
        }
        cfg = self.workdir / "orthanc.json"
        cfg.write_text(json.dumps(config, indent=2))
        return ["Orthanc", str(cfg)], child_env(self.server_nodelay), self.workdir

    def ready(self) -> bool:
        try:
            http_get(f"http://127.0.0.1:{self.http_port}/system", timeout=2)
        except (OSError, ValueError):
            return False
        return dicom_echo(self.dicom_port, self.aet)

    def searchable(self, ds: Dataset) -> bool | None:
        st = http_get(f"http://127.0.0.1:{self.http_port}/statistics")
        return int(st["CountInstances"]) >= ds.instances and int(st["CountSeries"]) >= len(ds.series)


class StoreSCP(Server):
    name = "storescp"
    aet = "STORESCP"

    def __init__(self, workdir: Path, server_nodelay: bool) -> None:
        super().__init__(workdir, server_nodelay)
        self.env_note = ("TCP_NODELAY=1 (--server-nodelay)" if server_nodelay
                         else "TCP_NODELAY unset (as packaged)")

    def command(self) -> tuple[list[str], dict[str, str], Path | None]:
        out = self.workdir / "storescp-out"
        out.mkdir()
        # Single process, bit-preserving (+B: writes the bytes as received, like Vireo), no fsync.
        return (["storescp", "--aetitle", self.aet, "+B", "-od", str(out), str(self.dicom_port)],
                child_env(self.server_nodelay), self.workdir)


SERVERS: dict[str, type[Server]] = {"vireo": Vireo, "orthanc": Orthanc, "storescp": StoreSCP}


# --------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------


@dataclass
class Run:
    target: str
    sender_env: str
    repeat: int
    seconds: float
    instances: int
    mbytes: float
    searchable_s: float | None
    server_cpu_s: float
    sender_cpu_s: float
    foreign_cpu_s: float
    memory: dict[str, float]
    server_env: str
    dcmsend_log: str
    profiled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.instances / self.seconds


_SUMMARY = {
    "total": re.compile(r"Number of SOP instances\s*:\s*(\d+)"),
    "sent": re.compile(r"sent to the peer\s*:\s*(\d+)"),
    "success": re.compile(r"with status SUCCESS\s*:\s*(\d+)"),
}


def check_dcmsend(log_text: str, rc: int, expected: int, where: str) -> None:
    got = {k: (int(m.group(1)) if (m := rx.search(log_text)) else None) for k, rx in _SUMMARY.items()}
    problems = []
    if rc != 0:
        problems.append(f"exit status {rc}")
    for k, v in got.items():
        if v != expected:
            problems.append(f"{k}={v} (expected {expected})")
    for bad in re.findall(r"\* with status (?!SUCCESS)[A-Z ]+:\s*[1-9]\d*", log_text):
        problems.append(bad.strip())
    if problems:
        tail = "\n".join(log_text.strip().splitlines()[-15:])
        raise BenchError(f"dcmsend to {where} did not deliver every instance with SUCCESS: "
                         f"{'; '.join(problems)}\n--- dcmsend log tail ---\n{tail}")


def run_once(target: str, sender_env: str, rep: int, ds: Dataset, args: argparse.Namespace, logs: Path,
             profile_dir: Path | None = None) -> Run:
    workdir = Path(tempfile.mkdtemp(prefix=f"{target}-{sender_env}-", dir=args.workdir))
    server = SERVERS[target](workdir, args.server_nodelay)
    tag = f"{target}-{sender_env}-{rep}" + ("-profiled" if profile_dir else "")
    sender_log = logs / f"dcmsend-{tag}.log"
    spy: subprocess.Popen[bytes] | None = None
    try:
        warm_page_cache(ds)
        os.sync()
        log(f"{tag}: starting {target}")
        server.start()
        sampler = MemorySampler(server.pid).start()
        if profile_dir is not None:
            spy = start_py_spy(server.pid, profile_dir / f"{tag}.txt")
        time.sleep(0.5)
        cmd = ["dcmsend", "-v", "127.0.0.1", str(server.dicom_port), "--scan-directories", "--call", server.aet,
               "--scan-pattern", "*.dcm", "--recurse", str(ds.path)]
        env = child_env(sender_env == "nodelay")
        # Whether there is an index; the query also warms the HTTP path so the first poll is not a cold request.
        has_index = server.searchable(ds) is not None
        snap0 = cpu_snapshot()
        cpu0, busy0, self0 = tree_cpu_seconds(server.pid), machine_busy_seconds(), self_cpu_seconds()
        log(f"{tag}: dcmsend ({'TCP_NODELAY=1' if sender_env == 'nodelay' else 'no TCP_NODELAY'}) "
            f"-> {target} :{server.dicom_port}")
        with open(sender_log, "wb") as out:
            t0 = time.perf_counter()
            sender = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                _, status, usage = os.wait4(sender.pid, 0)
            except BaseException:
                sender.kill()
                raise
            t1 = time.perf_counter()
            sender.returncode = os.waitstatus_to_exitcode(status)
        seconds = t1 - t0
        check_dcmsend(sender_log.read_text(errors="replace"), sender.returncode, ds.instances, tag)
        searchable_s: float | None = None
        polls = 0
        if has_index:
            deadline = t1 + args.searchable_timeout
            while True:
                polls += 1
                ok = server.searchable(ds)
                now = time.perf_counter()
                if ok:
                    searchable_s = now - t1
                    break
                if now > deadline:
                    raise BenchError(f"{tag}: dataset not searchable {args.searchable_timeout} s after dcmsend exited")
                time.sleep(0.02)
        cpu1, busy1, self1 = tree_cpu_seconds(server.pid), machine_busy_seconds(), self_cpu_seconds()
        server_cpu = cpu1 - cpu0
        sender_cpu = usage.ru_utime + usage.ru_stime
        foreign = max(0.0, (busy1 - busy0) - server_cpu - sender_cpu - (self1 - self0))
        others = busiest(snap0, cpu_snapshot(), set(tree_pids(server.pid)) | {os.getpid(), sender.pid})
        if target == "vireo" and args.settle > 0:
            time.sleep(args.settle)  # let post-ingest work (thumbnails) run before reading peak RSS
        memory = sampler.stop()
        run = Run(target, sender_env, rep, seconds, ds.instances, ds.bytes / 1e6, searchable_s, server_cpu,
                  sender_cpu, foreign, memory, server.env_note, str(sender_log), profiled=profile_dir is not None,
                  extra={"searchable_polls": polls, "other_processes_cpu_s": others})
        rss = f", peak RSS {memory['peak_rss_mb']:.0f} MB" if target == "vireo" else ""
        srch = f", searchable +{searchable_s:.3f} s" if searchable_s is not None else ""
        log(f"{tag}: {seconds:.1f} s = {run.rate:.1f} inst/s{srch}{rss}, server CPU "
            f"{1000 * server_cpu / ds.instances:.2f} ms/inst, foreign CPU {foreign:.1f} s"
            + (f" (busiest others: {others})" if foreign > 1.0 else ""))
        return run
    finally:
        if spy is not None:
            stop_py_spy(spy)
        server.stop()
        if server.log_path.exists():
            shutil.copy(server.log_path, logs / f"server-{tag}.log")
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        os.sync()
        time.sleep(1.0)


# --------------------------------------------------------------------------
# Profiling (optional, one extra Vireo run that is not part of the table)
# --------------------------------------------------------------------------


def start_py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy") or str(VENV_PYTHON.parent / "py-spy")
    if not Path(spy).exists():
        raise BenchError("--profile needs py-spy (e.g. .venv/bin/pip install py-spy)")
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [spy, "record", "-p", str(pid), "--format", "raw", "--rate", "100", "--subprocesses",
           "--threads", "-o", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(out.with_suffix(".log"), "wb"))


def stop_py_spy(spy: subprocess.Popen[bytes]) -> None:
    if spy.poll() is None:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(60)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


def summarize_profile(path: Path, top: int = 20) -> str:
    """Top self and inclusive frames of a py-spy raw (collapsed) profile."""
    if not path.exists():
        return f"(no profile written: see {path.with_suffix('.log')})"
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    per_thread: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = stack.split(";")
        total += count
        thread = next((f for f in frames[:2] if f.startswith("thread ")), "?")
        per_thread[re.sub(r"^thread \(\w+\):?\s*", "", thread) or "?"] += count
        frames = [f for f in frames if not f.startswith(("process ", "thread "))] or frames
        self_t[_short(frames[-1])] += count
        for f in {_short(f) for f in frames}:
            incl[f] += count
    if not total:
        return "(empty profile)"
    lines = [f"py-spy: {total} samples (100 Hz per thread, idle threads excluded by py-spy) in {path}"]
    lines.append("  threads: " + ", ".join(f"{t or '?'} {100 * c / total:.0f}%" for t, c in per_thread.most_common(8)))
    lines.append("  top self:")
    lines += [f"    {100 * c / total:5.1f}%  {f}" for f, c in self_t.most_common(top)]
    lines.append("  top inclusive (Vireo code and pynetdicom/pydicom/sqlalchemy):")
    ours = [(f, c) for f, c in incl.most_common() if re.search(r"/(app|core|ingest)/|pynetdicom|pydicom|sqlalchemy", f)]
    lines += [f"    {100 * c / total:5.1f}%  {f}" for f, c in ours[:top]]
    return "\n".join(lines)


def _short(frame: str) -> str:
    m = re.match(r"(.*) \((.*):(\d+)\)$", frame)
    if not m:
        return frame
    fn, file, _ = m.groups()
    file = re.sub(r".*/site-packages/", "", file).replace(str(REPO) + "/", "")
    return f"{fn} ({file})"


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def report(runs: list[Run], ds: Dataset, args: argparse.Namespace, meta: dict[str, Any]) -> dict[str, Any]:
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for r in runs:
        if not r.profiled:
            groups[(r.target, r.sender_env)].append(r)
    rows = []
    for (target, env), rs in sorted(groups.items(), key=lambda kv: (SENDER_ENVS.index(kv[0][1]), TARGETS.index(kv[0][0]))):
        secs = med([r.seconds for r in rs])
        row: dict[str, Any] = {
            "target": target, "sender_env": env, "runs": len(rs), "seconds": secs,
            "seconds_min": min(r.seconds for r in rs), "seconds_max": max(r.seconds for r in rs),
            "instances_per_s": ds.instances / secs, "mb_per_s": ds.bytes / 1e6 / secs,
            "server_cpu_ms_per_instance": 1000 * med([r.server_cpu_s for r in rs]) / ds.instances,
            "sender_cpu_s": med([r.sender_cpu_s for r in rs]),
            "foreign_cpu_s_max": max(r.foreign_cpu_s for r in rs),
            "searchable_s_max": (max(r.searchable_s for r in rs if r.searchable_s is not None)
                                 if any(r.searchable_s is not None for r in rs) else None),
            "peak_rss_mb_max": max(r.memory["peak_rss_mb"] for r in rs),
            "server_env": rs[0].server_env,
        }
        rows.append(row)
    by = {(r["target"], r["sender_env"]): r for r in rows}
    for r in rows:
        o = by.get(("orthanc", r["sender_env"]))
        r["ratio_vs_orthanc"] = r["instances_per_s"] / o["instances_per_s"] if o else None

    out = sys.stdout
    print(file=out)
    print("=" * 100, file=out)
    print(f"Vireo ingest benchmark  {time.strftime('%Y-%m-%d %H:%M')}", file=out)
    print(f"machine: nproc={meta['nproc']}, {meta['mem_gb']:.0f} GB RAM, {meta['platform']}, "
          f"loadavg at start {meta['loadavg']}", file=out)
    print(f"dataset: {ds.describe()}", file=out)
    print(f"tools: {meta['dcmsend']}; {meta['orthanc']}; Vireo {meta['vireo_rev']}; repeats={args.repeat} (median)",
          file=out)
    print("sender: dcmsend -v 127.0.0.1 PORT --scan-directories --call AET --scan-pattern '*.dcm' --recurse DATA, "
          "one association", file=out)
    print("  plain   = dcmsend without TCP_NODELAY in its environment (as users run it)", file=out)
    print("  nodelay = TCP_NODELAY=1 in dcmsend's environment (Debian's DCMTK then disables Nagle)", file=out)
    envs = {}
    for r in rows:
        envs.setdefault(r["target"], r["server_env"])
    for t, e in envs.items():
        print(f"server env: {t}: {e}", file=out)
    print(file=out)
    hdr = (f"{'target':<9} {'sender':<8} {'seconds':>8} {'min-max':>13} {'inst/s':>8} {'MB/s':>7} {'vs Orthanc':>10} "
           f"{'searchable':>10} {'peak RSS':>9} {'srv CPU':>9} {'foreign':>8}")
    print(hdr, file=out)
    print(f"{'':<9} {'':<8} {'':>8} {'':>13} {'':>8} {'':>7} {'(same env)':>10} {'after last':>10} {'MB':>9} "
          f"{'ms/inst':>9} {'CPU s':>8}", file=out)
    print("-" * len(hdr), file=out)
    for r in rows:
        ratio = f"{r['ratio_vs_orthanc']:.2f}x" if r["ratio_vs_orthanc"] is not None else "-"
        srch = f"{r['searchable_s_max']:.3f} s" if r["searchable_s_max"] is not None else "n/a"
        rss = f"{r['peak_rss_mb_max']:.0f}"
        mm = f"{r['seconds_min']:.1f}-{r['seconds_max']:.1f}"
        print(f"{r['target']:<9} {r['sender_env']:<8} {r['seconds']:>8.1f} {mm:>13} {r['instances_per_s']:>8.1f} "
              f"{r['mb_per_s']:>7.1f} {ratio:>10} {srch:>10} {rss:>9} {r['server_cpu_ms_per_instance']:>9.2f} "
              f"{r['foreign_cpu_s_max']:>8.1f}", file=out)
    print("(peak RSS: VmHWM of the server process plus any children's; searchable: max over repeats, "
          "from dcmsend's exit until the index lists every series with all its instances; "
          "foreign CPU: CPU used by other processes on the machine during the run, max over repeats)", file=out)
    for r in rows:
        if r["target"] != "orthanc":
            s = by.get(("storescp", r["sender_env"]))
            if s and r["target"] == "vireo":
                print(f"  vireo/storescp ({r['sender_env']}): {r['instances_per_s'] / s['instances_per_s']:.2f}x", file=out)
    print(file=out)

    checks = []
    for env in SENDER_ENVS:
        v, o = by.get(("vireo", env)), by.get(("orthanc", env))
        if v and o:
            checks.append((f"Vireo/Orthanc instances/s, sender {env}", f">= {TARGET_RATIO:.1f}x",
                           f"{v['ratio_vs_orthanc']:.2f}x", v["ratio_vs_orthanc"] >= TARGET_RATIO))
    v_rows = [r for r in rows if r["target"] == "vireo"]
    if v_rows:
        worst_s = max(r["searchable_s_max"] for r in v_rows)
        checks.append(("Vireo searchable after the last instance", f"<= {TARGET_SEARCHABLE_S:.0f} s",
                       f"{worst_s:.3f} s", worst_s <= TARGET_SEARCHABLE_S))
        worst_rss = max(r["peak_rss_mb_max"] for r in v_rows)
        checks.append(("Vireo peak RSS", f"<= {TARGET_RSS_MB:.0f} MB", f"{worst_rss:.0f} MB", worst_rss <= TARGET_RSS_MB))
    print("targets:", file=out)
    for what, target, got, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {what:<45} target {target:<9} got {got}", file=out)
    if not checks:
        print("  (none applicable: run vireo and orthanc)", file=out)
    noisy = [r for r in rows if r["foreign_cpu_s_max"] > 1.0]
    if noisy:
        print(f"WARNING: other processes used > 1 s of CPU during {len(noisy)} configuration(s); on 2 cores that "
              "moves results by up to 1.7x: rerun on an idle machine.", file=out)
    if not args.small and args.instances_scale == 1.0 and ds.instances < 2000:
        print(f"WARNING: only {ds.instances} instances (the issue asks for >= 2,000)", file=out)
    print("=" * 100, file=out)
    out.flush()
    return {"rows": rows, "checks": [{"what": c[0], "target": c[1], "got": c[2], "passed": c[3]} for c in checks],
            "all_passed": all(c[3] for c in checks) if checks else None}


def tool_version(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=10)
        return next((ln.strip().strip("$").strip() for ln in (r.stdout + r.stderr).splitlines() if ln.strip()), "?")
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine_meta() -> dict[str, Any]:
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], check=False, capture_output=True,
                             text=True, timeout=10).stdout.strip() or "?"
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], check=False, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        rev += " (+uncommitted changes)" if dirty else ""
    except (OSError, subprocess.TimeoutExpired):
        rev = "?"
    mem_kb = _status_kb_meminfo()
    return {
        "nproc": os.cpu_count(),
        "mem_gb": mem_kb * 1024 / 1e9,
        "platform": f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "dcmsend": tool_version(["dcmsend", "--version"]),
        "orthanc": tool_version(["Orthanc", "--version"]),
        "vireo_rev": rev,
    }


def _status_kb_meminfo() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    return 0


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog="examples" + __doc__.split("Usage")[1])
    p.add_argument("--small", action="store_true", help="smoke run: 1 patient, 4 series, 64x64/32x32 images")
    p.add_argument("--instances-scale", type=float, default=1.0, metavar="F",
                   help="multiply the slice counts by F (e.g. 0.2 for a quicker run with full-size images)")
    p.add_argument("--data", metavar="DIR", help="dataset directory: reused if it holds *.dcm files, else generated "
                   f"there (default: a cache under {CACHE_ROOT}, generated once per parameter set)")
    p.add_argument("--repeat", type=int, default=1, metavar="N", help="runs per configuration (median reported)")
    p.add_argument("--only", default=",".join(TARGETS), help="comma-separated subset of vireo,orthanc,storescp")
    p.add_argument("--senders", default=",".join(SENDER_ENVS), help="comma-separated subset of plain,nodelay")
    p.add_argument("--server-nodelay", action="store_true",
                   help="also set TCP_NODELAY=1 for Orthanc and storescp (default: as packaged, unset)")
    p.add_argument("--json", metavar="OUT", help="write every run and the summary as JSON")
    p.add_argument("--settle", type=float, default=5.0, metavar="S",
                   help="seconds Vireo keeps running after ingest before its peak RSS is read (thumbnails etc.)")
    p.add_argument("--searchable-timeout", type=float, default=120.0, metavar="S")
    p.add_argument("--profile", metavar="DIR",
                   help="after the measured runs, one extra Vireo run (sender TCP_NODELAY=1) under py-spy; "
                   "raw profile and its top frames in DIR (not part of the table)")
    p.add_argument("--keep", action="store_true", help="keep servers' storage directories")
    p.add_argument("--workdir", default=None, metavar="DIR", help="where servers' temporary storage goes (default /tmp)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    args.targets = [t.strip() for t in args.only.split(",") if t.strip()]
    args.sender_envs = [s.strip() for s in args.senders.split(",") if s.strip()]
    if bad := set(args.targets) - set(TARGETS):
        p.error(f"--only: unknown target(s) {sorted(bad)}")
    if bad := set(args.sender_envs) - set(SENDER_ENVS):
        p.error(f"--senders: unknown set-up(s) {sorted(bad)}")
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_private_netns()
    for tool in ("dcmsend", "echoscu", *(["storescp"] if "storescp" in args.targets else []),
                 *(["Orthanc"] if "orthanc" in args.targets else [])):
        if not shutil.which(tool):
            raise SystemExit(f"bench: {tool} not found (apt-get install -y dcmtk orthanc)")
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    ds = prepare_dataset(args)
    meta = machine_meta()
    logs = CACHE_ROOT / "runs" / time.strftime("%Y%m%d-%H%M%S")
    logs.mkdir(parents=True, exist_ok=True)
    log(f"nproc={meta['nproc']}; dataset: {ds.describe()}")
    log(f"logs in {logs}")
    runs: list[Run] = []
    for rep in range(1, args.repeat + 1):
        for env in args.sender_envs:
            for target in args.targets:
                runs.append(run_once(target, env, rep, ds, args, logs))
    profile_text = None
    if args.profile:
        pdir = Path(args.profile).resolve()
        run = run_once("vireo", "nodelay", 1, ds, args, logs, profile_dir=pdir)
        runs.append(run)
        profile_text = summarize_profile(pdir / "vireo-nodelay-1-profiled.txt")
        (pdir / "summary.txt").write_text(profile_text + "\n")
    summary = report(runs, ds, args, meta)
    if profile_text:
        print(f"\nprofiled Vireo run (not in the table): {runs[-1].seconds:.1f} s = {runs[-1].rate:.1f} inst/s")
        print(profile_text)
    if args.json:
        doc = {"meta": meta, "dataset": {**asdict(ds), "path": str(ds.path)}, "summary": summary,
               "runs": [{**asdict(r), "instances_per_s": r.rate} for r in runs], "logs": str(logs)}
        Path(args.json).write_text(json.dumps(doc, indent=1, default=str))
        log(f"wrote {args.json}")
    return 1 if args.strict and summary["all_passed"] is False else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        sys.exit(2)
