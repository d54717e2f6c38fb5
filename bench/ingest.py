#!/usr/bin/env python3
"""Ingest benchmark: Vireo against Orthanc and DCMTK's storescp, all fed by dcmsend, case by case.

Generates (once, cached) a synthetic CT/MR dataset with ``tests/factories.write_dataset``
(defaults: 24 series, ~2,600 instances, ~1 GB, mostly CT 512x512 int16), then for every case
of issue 19 and every target (vireo, orthanc, storescp) it:

* starts the server fresh (new storage/data dir) on 127.0.0.1,
* sends the dataset with dcmsend and times it (instances/s = instances / wall time until the
  last dcmsend exits), checking every dcmsend's status summary (every instance SUCCESS),
* polls the server's index until every series is there with its full instance count
  ("searchable" = time from the last dcmsend's exit to that moment; Vireo: /api/series,
  Orthanc: /statistics; storescp has no index),
* records the server's CPU time and peak RSS over its whole process tree (Vireo's receiver
  worker processes are children of the main process) and the CPU used by anything else on
  the machine meanwhile ("foreign CPU": benchmark on an idle machine).

Cases (``--cases``):
  single  one association, TCP_NODELAY=1 in dcmsend's and in Orthanc's/storescp's environment
          (a tuned Orthanc; Debian's DCMTK reads the variable);
  four    the dataset split by series into 4 disjoint parts balanced by instance count, 4
          dcmsend processes started together, TCP_NODELAY=1 on both sides (storescp --fork);
  plain   one association, senders and Orthanc/storescp as packaged (Nagle on).
Vireo never gets TCP_NODELAY (it does not need it); ``--vireo-workers N`` sets
VIREO_DICOM_WORKERS=N for it (0: receive in the main process), else Vireo's default.
All proxy variables are removed from every child's environment.

``--large`` (bench/ingest_large.py) generates a ~2 GB native multi-frame instance once (streamed
to disk, never held in memory), sends it to Vireo and to storescp, and reports Vireo's RSS growth
during receipt, the time to Success, that it is searchable, and three WADO-RS frame fetches
(time, RSS growth, bytes equal to the file's).

Everything runs in a private network namespace whose only interface is ``lo``: when not
already in one, the script re-executes itself under ``unshare -n`` (needs root) and brings
``lo`` up. Orthanc 1.10 binds all interfaces, which is why the namespace is required.

Usage (from the repository root):
    .venv/bin/python bench/ingest.py --small            # quick smoke run (~1-2 min)
    .venv/bin/python bench/ingest.py                    # every case (~10 min on 2 cores)
    .venv/bin/python bench/ingest.py --cases single,four --only vireo,orthanc --repeat 2 --json out.json
    .venv/bin/python bench/ingest.py --large [--large-gb 2.0]   # only the large-object case
    .venv/bin/python bench/ingest.py --profile /tmp/prof  # + one py-spy'd Vireo run (case single)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest_procs import (
    MemorySampler,
    busiest,
    cpu_snapshot,
    machine_busy_seconds,
    self_cpu_seconds,
    tree_cpu_seconds,
    tree_pids,
)
from bench.ingest_servers import (
    NETNS_MARK,
    REPO,
    SERVERS,
    TARGETS,
    VENV_PYTHON,
    BenchError,
    check_dcmsend,
    child_env,
    log,
)

CACHE_ROOT = Path(tempfile.gettempdir()) / "vireo-ingest-bench"
MANIFEST = "vireo-bench-manifest.json"


@dataclass(frozen=True)
class Case:
    """One sender/server set-up of issue 19's "What to reach"."""

    name: str
    associations: int
    sender_nodelay: bool
    server_nodelay: bool  # for Orthanc and storescp; Vireo never reads TCP_NODELAY
    about: str


CASES: dict[str, Case] = {
    "single": Case("single", 1, True, True, "one association, TCP_NODELAY=1 in dcmsend's and the server's environment"),
    "four": Case("four", 4, True, True, "4 concurrent associations (dataset split by series, balanced by instances), "
                 "TCP_NODELAY=1 both sides"),
    "plain": Case("plain", 1, False, False, "one association, dcmsend and Orthanc/storescp as packaged (Nagle on)"),
}
LEGACY_SENDERS = {"plain": "plain", "nodelay": "single"}  # the old --senders names

# Targets of issue 19 (MB = 10^6 bytes, like every MB in this script).
TARGET_RATIO = {"single": 1.3, "four": 1.3, "plain": 3.0}  # Vireo / Orthanc instances/s
TARGET_STORESCP_RATIO = 0.7  # Vireo / storescp, where both have TCP_NODELAY (single, four)
TARGET_FOUR_OVER_SINGLE = 1.7  # Vireo's own 4-association rate over its 1-association rate
TARGET_SEARCHABLE_S = 1.0  # "search catches up within 1 s"
TARGET_RSS_MB = 500.0


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



def series_files(ds: Dataset) -> dict[str, list[str]]:
    """SeriesInstanceUID -> its files (read once from the headers, then cached next to the dataset)."""
    key = hashlib.sha1(str(ds.path).encode()).hexdigest()[:10]
    cache = CACHE_ROOT / f"series-files-{key}.json"
    if cache.exists():
        found = json.loads(cache.read_text())
        if {k: len(v) for k, v in found.items()} == ds.series:
            return found
    from pydicom import dcmread

    log(f"reading the series of {ds.instances} files under {ds.path} (once) ...")
    out: dict[str, list[str]] = defaultdict(list)
    for f in sorted(ds.path.rglob("*.dcm")):
        uid = str(dcmread(f, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"]).SeriesInstanceUID)
        out[uid].append(str(f))
    if {k: len(v) for k, v in out.items()} != ds.series:
        raise BenchError(f"the files under {ds.path} do not match the dataset's manifest")
    cache.write_text(json.dumps(out))
    return dict(out)


def split_by_series(files: dict[str, list[str]], parts: int) -> list[list[str]]:
    """Disjoint parts of whole series, balanced by instance count (largest series first, to the lightest part)."""
    bins: list[list[str]] = [[] for _ in range(parts)]
    for uid in sorted(files, key=lambda u: (-len(files[u]), u)):
        min(bins, key=len).extend(files[uid])
    if any(not b for b in bins):
        raise BenchError(f"cannot split {len(files)} series into {parts} non-empty parts")
    return bins


# --------------------------------------------------------------------------
# One run: one target, one case
# --------------------------------------------------------------------------


@dataclass
class Run:
    target: str
    case: str
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
    server_command: str
    dcmsend_logs: list[str]
    profiled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.instances / self.seconds


def dcmsend_scan(port: int, aet: str, path: Path) -> list[str]:
    """One association for every *.dcm under path, as the issue's outside check runs it."""
    return ["dcmsend", "-v", "127.0.0.1", str(port), "--scan-directories", "--call", aet, "--scan-pattern", "*.dcm",
            "--recurse", str(path)]


def send_plans(case: Case, port: int, aet: str, ds: Dataset, parts: list[list[str]] | None) -> list[tuple[list[str], int]]:
    """(dcmsend command, instances it must deliver) for each association of the case."""
    if case.associations == 1:
        return [(dcmsend_scan(port, aet, ds.path), ds.instances)]
    assert parts is not None and len(parts) == case.associations
    return [(["dcmsend", "-v", "127.0.0.1", str(port), "--call", aet, *part], len(part)) for part in parts]


def describe_senders(case: Case, parts: list[list[str]] | None) -> str:
    env = "TCP_NODELAY=1 " if case.sender_nodelay else "(no TCP_NODELAY) "
    if case.associations == 1:
        return env + shlex.join(dcmsend_scan(0, "AET", Path("DATA"))).replace(" 0 ", " PORT ")
    sizes = ", ".join(str(len(p)) for p in parts or [])
    return (f"{case.associations} x, started together: {env}dcmsend -v 127.0.0.1 PORT --call AET FILES... "
            f"(whole series per part; instances per part: {sizes})")


def run_once(target: str, case: Case, rep: int, ds: Dataset, args: argparse.Namespace, logs: Path,
             parts: list[list[str]] | None = None, profile_dir: Path | None = None) -> Run:
    workdir = Path(tempfile.mkdtemp(prefix=f"{target}-{case.name}-", dir=args.workdir))
    options = {"vireo_workers": args.vireo_workers, "storescp_fork": case.associations > 1}
    server = SERVERS[target](workdir, case.server_nodelay or args.server_nodelay, options)
    tag = f"{target}-{case.name}-{rep}" + ("-profiled" if profile_dir else "")
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
        plans = send_plans(case, server.dicom_port, server.aet, ds, parts)
        env = child_env(case.sender_nodelay)
        # Whether there is an index; the query also warms the HTTP path so the first poll is not a cold request.
        has_index = server.searchable(ds) is not None
        snap0 = cpu_snapshot()
        cpu0, busy0, self0 = tree_cpu_seconds(server.pid), machine_busy_seconds(), self_cpu_seconds()
        log(f"{tag}: {len(plans)} x dcmsend ({'TCP_NODELAY=1' if case.sender_nodelay else 'no TCP_NODELAY'}) "
            f"-> {target} :{server.dicom_port}")
        sender_logs = [logs / f"dcmsend-{tag}-{i + 1}.log" for i in range(len(plans))]
        outs = [open(p, "wb") for p in sender_logs]  # noqa: SIM115 (closed below)
        senders: list[subprocess.Popen[bytes]] = []
        sender_cpu = 0.0
        try:
            t0 = time.perf_counter()
            for (cmd, _), out in zip(plans, outs):
                senders.append(subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL))
            for sender in senders:  # the last one to exit ends the clock
                _, status, usage = os.wait4(sender.pid, 0)
                sender.returncode = os.waitstatus_to_exitcode(status)
                sender_cpu += usage.ru_utime + usage.ru_stime
            t1 = time.perf_counter()
        except BaseException:
            for sender in senders:
                if sender.returncode is None:
                    sender.kill()
            raise
        finally:
            for out in outs:
                out.close()
        seconds = t1 - t0
        for (_, expected), sender, path in zip(plans, senders, sender_logs):
            check_dcmsend(path.read_text(errors="replace"), sender.returncode, expected, f"{tag} ({path.name})")
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
        foreign = max(0.0, (busy1 - busy0) - server_cpu - sender_cpu - (self1 - self0))
        others = busiest(snap0, cpu_snapshot(), set(tree_pids(server.pid)) | {os.getpid()} | {s.pid for s in senders})
        processes = len(tree_pids(server.pid))
        if target == "vireo" and args.settle > 0:
            time.sleep(args.settle)  # let post-ingest work (thumbnails) run before reading peak RSS
        memory = sampler.stop()
        run = Run(target, case.name, rep, seconds, ds.instances, ds.bytes / 1e6, searchable_s, server_cpu,
                  sender_cpu, foreign, memory, server.env_note, server.command_line, [str(p) for p in sender_logs],
                  profiled=profile_dir is not None,
                  extra={"searchable_polls": polls, "other_processes_cpu_s": others, "server_processes": processes,
                         "server_env_set": server.env_shown})
        srch = f", searchable +{searchable_s:.3f} s" if searchable_s is not None else ""
        log(f"{tag}: {seconds:.1f} s = {run.rate:.1f} inst/s{srch}, peak RSS {memory['peak_rss_mb']:.0f} MB "
            f"({processes} processes), server CPU {1000 * server_cpu / ds.instances:.2f} ms/inst, foreign CPU "
            f"{foreign:.1f} s" + (f" (busiest others: {others})" if foreign > 1.0 else ""))
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


Check = tuple[str, str, str, bool]  # what, target, got, passed


def _rows(runs: list[Run], ds: Dataset) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for r in runs:
        if not r.profiled:
            groups[(r.case, r.target)].append(r)
    rows = []
    for (case, target), rs in sorted(groups.items(), key=lambda kv: (list(CASES).index(kv[0][0]),
                                                                     TARGETS.index(kv[0][1]))):
        secs = med([r.seconds for r in rs])
        srch = [r.searchable_s for r in rs if r.searchable_s is not None]
        rows.append({
            "case": case, "target": target, "runs": len(rs), "seconds": secs,
            "seconds_min": min(r.seconds for r in rs), "seconds_max": max(r.seconds for r in rs),
            "instances_per_s": ds.instances / secs, "mb_per_s": ds.bytes / 1e6 / secs,
            "server_cpu_ms_per_instance": 1000 * med([r.server_cpu_s for r in rs]) / ds.instances,
            "sender_cpu_s": med([r.sender_cpu_s for r in rs]),
            "foreign_cpu_s_max": max(r.foreign_cpu_s for r in rs),
            "searchable_s_max": max(srch) if srch else None,
            "peak_rss_mb_max": max(r.memory["peak_rss_mb"] for r in rs),
            "sampled_tree_rss_mb_max": max(r.memory["sampled_tree_rss_mb"] for r in rs),
            "server_processes": max(int(r.extra.get("server_processes", 1)) for r in rs),
            "server_env": rs[0].server_env, "server_command": rs[0].server_command,
            "server_env_set": rs[0].extra.get("server_env_set", {}),
        })
    by = {(r["case"], r["target"]): r for r in rows}
    for r in rows:
        o, s = by.get((r["case"], "orthanc")), by.get((r["case"], "storescp"))
        r["ratio_vs_orthanc"] = r["instances_per_s"] / o["instances_per_s"] if o else None
        r["ratio_vs_storescp"] = r["instances_per_s"] / s["instances_per_s"] if s else None
    return rows


def _checks(rows: list[dict[str, Any]]) -> list[Check]:
    by = {(r["case"], r["target"]): r for r in rows}
    checks: list[Check] = []
    for case in CASES:
        v = by.get((case, "vireo"))
        if not v:
            continue
        if v["ratio_vs_orthanc"] is not None:
            t = TARGET_RATIO[case]
            checks.append((f"{case}: Vireo/Orthanc instances/s", f">= {t:.1f}x", f"{v['ratio_vs_orthanc']:.2f}x",
                           v["ratio_vs_orthanc"] >= t))
        if case != "plain" and v["ratio_vs_storescp"] is not None:
            checks.append((f"{case}: Vireo/storescp instances/s", f">= {TARGET_STORESCP_RATIO:.1f}x",
                           f"{v['ratio_vs_storescp']:.2f}x", v["ratio_vs_storescp"] >= TARGET_STORESCP_RATIO))
        if case == "four" and ("single", "vireo") in by:
            k = v["instances_per_s"] / by[("single", "vireo")]["instances_per_s"]
            checks.append(("four: Vireo 4-association / 1-association rate", f">= {TARGET_FOUR_OVER_SINGLE:.1f}x",
                           f"{k:.2f}x", k >= TARGET_FOUR_OVER_SINGLE))
        if v["searchable_s_max"] is not None:
            checks.append((f"{case}: Vireo searchable after the last dcmsend", f"<= {TARGET_SEARCHABLE_S:.0f} s",
                           f"{v['searchable_s_max']:.3f} s", v["searchable_s_max"] <= TARGET_SEARCHABLE_S))
        checks.append((f"{case}: Vireo peak RSS (process tree)", f"<= {TARGET_RSS_MB:.0f} MB",
                       f"{v['peak_rss_mb_max']:.0f} MB", v["peak_rss_mb_max"] <= TARGET_RSS_MB))
    return checks


def _fmt(x: float | None, spec: str, unit: str = "") -> str:
    return "-" if x is None else f"{x:{spec}}{unit}"


def report(runs: list[Run], ds: Dataset | None, args: argparse.Namespace, meta: dict[str, Any],
           parts: list[list[str]] | None, large: dict[str, Any] | None) -> dict[str, Any]:
    out = sys.stdout
    rows = _rows(runs, ds) if ds and runs else []
    checks = _checks(rows)
    print(file=out)
    print("=" * 118, file=out)
    print(f"Vireo ingest benchmark  {time.strftime('%Y-%m-%d %H:%M %Z')}", file=out)
    print(f"machine: nproc={meta['nproc']}, {meta['mem_gb']:.0f} GB RAM, {meta['platform']}, "
          f"loadavg at start {meta['loadavg']}", file=out)
    print(f"tools: {meta['dcmsend']}; {meta['orthanc']}; Vireo {meta['vireo_rev']}; repeats={args.repeat} (median)",
          file=out)
    if ds and rows:
        print(f"dataset: {ds.describe()}", file=out)
    by = {(r["case"], r["target"]): r for r in rows}
    for case, c in CASES.items():
        crow = [r for r in rows if r["case"] == case]
        if not crow:
            continue
        print(file=out)
        print(f"--- case {case}: {c.about}", file=out)
        print(f"  sender: {describe_senders(c, parts)}", file=out)
        for r in crow:
            env = " ".join(f"{k}={v}" for k, v in sorted(r["server_env_set"].items()) if k != "VIREO_ADMIN_PASSWORD")
            print(f"  {r['target']}: {r['server_env']}", file=out)
            print(f"      $ {env + ' ' if env else ''}{r['server_command']}", file=out)
        hdr = (f"  {'target':<9} {'seconds':>8} {'min-max':>11} {'inst/s':>8} {'MB/s':>6} {'/Orthanc':>9} "
               f"{'/storescp':>9} {'searchable':>10} {'peak RSS':>9} {'procs':>5} {'srv CPU':>8} {'foreign':>8}")
        print(hdr, file=out)
        print(f"  {'':<9} {'':>8} {'':>11} {'':>8} {'':>6} {'':>9} {'':>9} {'after last':>10} {'MB':>9} {'':>5} "
              f"{'ms/inst':>8} {'CPU s':>8}", file=out)
        for r in crow:
            mm = f"{r['seconds_min']:.1f}-{r['seconds_max']:.1f}"
            print(f"  {r['target']:<9} {r['seconds']:>8.1f} {mm:>11} {r['instances_per_s']:>8.1f} {r['mb_per_s']:>6.1f} "
                  f"{_fmt(r['ratio_vs_orthanc'], '.2f', 'x'):>9} {_fmt(r['ratio_vs_storescp'], '.2f', 'x'):>9} "
                  f"{_fmt(r['searchable_s_max'], '.3f', ' s'):>10} {r['peak_rss_mb_max']:>9.0f} "
                  f"{r['server_processes']:>5} {r['server_cpu_ms_per_instance']:>8.2f} {r['foreign_cpu_s_max']:>8.1f}",
                  file=out)
        if case == "four":
            for t in ("vireo", "orthanc", "storescp"):
                if (case, t) in by and ("single", t) in by:
                    k = by[(case, t)]["instances_per_s"] / by[("single", t)]["instances_per_s"]
                    print(f"  {t} four/single: {k:.2f}x", file=out)
    if rows:
        print(file=out)
        print("(peak RSS: sum of every process's VmHWM in the server's tree, an upper bound; procs: processes in the "
              "tree after the send; srv CPU: the whole tree's CPU from the first dcmsend's start until searchable, per "
              "instance; searchable: max over repeats, from the last dcmsend's exit until the index lists every series "
              "with all its instances; foreign CPU: CPU used by other processes on the machine meanwhile, max over "
              "repeats)", file=out)
    large_checks: list[Check] = []
    if large:
        from bench.ingest_large import print_large

        large_checks = print_large(large, out)
        checks += large_checks
    print(file=out)
    print("summary:", file=out)
    print(f"  {'':<4}  {'what':<52} {'target':<10} got", file=out)
    for what, target, got, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {what:<52} {target:<10} {got}", file=out)
    if not checks:
        print("  (none applicable: run vireo with orthanc or storescp)", file=out)
    noisy = [r for r in rows if r["foreign_cpu_s_max"] > 1.0]
    if noisy:
        print(f"WARNING: other processes used > 1 s of CPU during {len(noisy)} configuration(s) "
              f"(up to {max(r['foreign_cpu_s_max'] for r in noisy):.0f} s); on 2 cores that moves results by up to "
              "1.7x: rerun on an idle machine.", file=out)
    if ds and rows and not args.small and args.instances_scale == 1.0 and ds.instances < 2000:
        print(f"WARNING: only {ds.instances} instances (the issue asks for >= 2,000)", file=out)
    print("=" * 118, file=out)
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
    p.add_argument("--small", action="store_true", help="smoke run: 1 patient, 4 series, 64x64/32x32 images "
                   "(with --large: a ~0.1 GB object)")
    p.add_argument("--instances-scale", type=float, default=1.0, metavar="F",
                   help="multiply the slice counts by F (e.g. 0.2 for a quicker run with full-size images)")
    p.add_argument("--data", metavar="DIR", help="dataset directory: reused if it holds *.dcm files, else generated "
                   f"there (default: a cache under {CACHE_ROOT}, generated once per parameter set)")
    p.add_argument("--repeat", type=int, default=1, metavar="N", help="runs per configuration (median reported)")
    p.add_argument("--cases", default=None, help="comma-separated subset of " + ",".join(CASES)
                   + " (default: all, or none with --large)")
    p.add_argument("--only", default=",".join(TARGETS), help="comma-separated subset of vireo,orthanc,storescp")
    p.add_argument("--senders", default=None, help="old name for --cases: plain = case plain, nodelay = case single")
    p.add_argument("--server-nodelay", action="store_true",
                   help="also set TCP_NODELAY=1 for Orthanc and storescp in case plain")
    p.add_argument("--vireo-workers", type=int, default=None, metavar="N",
                   help="VIREO_DICOM_WORKERS=N for Vireo (0: receive in the main process; default: Vireo's own)")
    p.add_argument("--large", action="store_true", help="the large-object case (bench/ingest_large.py)")
    p.add_argument("--large-gb", type=float, default=None, metavar="GB",
                   help="size of the large instance in GB (default 2.0; 0.1 with --small)")
    p.add_argument("--json", metavar="OUT", help="write every run and the summary as JSON")
    p.add_argument("--settle", type=float, default=5.0, metavar="S",
                   help="seconds Vireo keeps running after ingest before its peak RSS is read (thumbnails etc.)")
    p.add_argument("--searchable-timeout", type=float, default=120.0, metavar="S")
    p.add_argument("--profile", metavar="DIR",
                   help="after the measured runs, one extra Vireo run (case single) under py-spy; "
                   "raw profile and its top frames in DIR (not part of the table)")
    p.add_argument("--keep", action="store_true", help="keep servers' storage directories")
    p.add_argument("--workdir", default=None, metavar="DIR", help="where servers' temporary storage goes (default /tmp)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = p.parse_args(argv)
    args.targets = [t.strip() for t in args.only.split(",") if t.strip()]
    if bad := set(args.targets) - set(TARGETS):
        p.error(f"--only: unknown target(s) {sorted(bad)}")
    if args.cases is not None and args.senders is not None:
        p.error("--senders is the old name of --cases: give one of them")
    if args.senders is not None:
        names = [s.strip() for s in args.senders.split(",") if s.strip()]
        if bad := set(names) - set(LEGACY_SENDERS):
            p.error(f"--senders: unknown set-up(s) {sorted(bad)}")
        args.case_names = [LEGACY_SENDERS[n] for n in names]
    elif args.cases is not None:
        args.case_names = [c.strip() for c in args.cases.split(",") if c.strip()]
        if bad := set(args.case_names) - set(CASES):
            p.error(f"--cases: unknown case(s) {sorted(bad)} (choose from {', '.join(CASES)})")
    else:
        args.case_names = [] if args.large else list(CASES)
    args.case_names = [c for c in CASES if c in args.case_names]  # report order
    if args.large_gb is None:
        args.large_gb = 0.1 if args.small else 2.0
    if args.large_gb <= 0:
        p.error("--large-gb must be > 0")
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    if args.vireo_workers is not None and args.vireo_workers < 0:
        p.error("--vireo-workers must be >= 0")
    if not args.case_names and not args.large:
        p.error("nothing to run: give --cases or --large")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_private_netns()
    needs = ["dcmsend", "echoscu"]
    needs += ["storescp"] if "storescp" in args.targets or args.large else []
    needs += ["Orthanc"] if "orthanc" in args.targets and args.case_names else []
    needs += ["dciodvfy"] if args.large else []
    for tool in needs:
        if not shutil.which(tool):
            raise SystemExit(f"bench: {tool} not found (apt-get install -y dcmtk orthanc dicom3tools)")
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    meta = machine_meta()
    logs = CACHE_ROOT / "runs" / time.strftime("%Y%m%d-%H%M%S")
    logs.mkdir(parents=True, exist_ok=True)
    log(f"nproc={meta['nproc']}; logs in {logs}")
    ds: Dataset | None = None
    parts: list[list[str]] | None = None
    runs: list[Run] = []
    if args.case_names:
        ds = prepare_dataset(args)
        log(f"dataset: {ds.describe()}")
        if "four" in args.case_names:
            parts = split_by_series(series_files(ds), CASES["four"].associations)
            log("four: instances per part " + ", ".join(str(len(p)) for p in parts))
        for rep in range(1, args.repeat + 1):
            for case in args.case_names:
                for target in args.targets:
                    runs.append(run_once(target, CASES[case], rep, ds, args, logs, parts))
    large: dict[str, Any] | None = None
    if args.large:
        from bench.ingest_large import run_large

        large = run_large(args, logs, CACHE_ROOT)
    profile_text = None
    if args.profile:
        if ds is None:
            ds = prepare_dataset(args)
        pdir = Path(args.profile).resolve()
        run = run_once("vireo", CASES["single"], 1, ds, args, logs, profile_dir=pdir)
        runs.append(run)
        profile_text = summarize_profile(pdir / "vireo-single-1-profiled.txt")
        (pdir / "summary.txt").write_text(profile_text + "\n")
    summary = report(runs, ds, args, meta, parts, large)
    if profile_text:
        print(f"\nprofiled Vireo run (not in the table): {runs[-1].seconds:.1f} s = {runs[-1].rate:.1f} inst/s")
        print(profile_text)
    if args.json:
        doc = {"meta": meta, "dataset": {**asdict(ds), "path": str(ds.path)} if ds else None, "summary": summary,
               "runs": [{**asdict(r), "instances_per_s": r.rate} for r in runs], "large": large, "logs": str(logs)}
        Path(args.json).write_text(json.dumps(doc, indent=1, default=str))
        log(f"wrote {args.json}")
    return 1 if args.strict and summary["all_passed"] is False else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        sys.exit(2)
