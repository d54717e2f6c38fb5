"""/proc readings for the ingest benchmark: CPU and memory of a process tree, and the machine's CPU.

Split from bench/ingest.py so the large-object case (bench/ingest_large.py) reads memory the same
way. A server is measured as its whole process tree because Vireo's receiver worker processes
are children of the main process: leaving them out would make a multi-process receiver look free.
"""

from __future__ import annotations

import os
import resource
import threading
from collections import Counter, defaultdict

CLK_TCK = os.sysconf("SC_CLK_TCK")



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



def tree_rss_kb(root: int) -> int:
    """VmRSS summed over the process tree now (what the machine must hold for it at this moment)."""
    return sum(_status_kb(pid, "VmRSS") for pid in tree_pids(root))
