#!/usr/bin/env python3
"""DICOMweb benchmark: Vireo's /dicomweb against Orthanc's DICOMweb plugin, same data, same run.

1. Generates (once, cached under /tmp/vireo-dicomweb-bench/) a 300-instance CT series
   (512x512 int16, as OHIF loads them) and 60 small CT/MR series of 12 patients.
2. Starts Vireo (`python main.py`, fresh data dir) and Orthanc (Debian `orthanc` with
   `orthanc-dicomweb`, default plugin settings) and loads both with `dcmsend`.
3. QIDO-RS series searches (five kinds, below), each repeated, over one keep-alive
   connection per server: p95 per kind and overall, Vireo/Orthanc ratio of the overall p95.
4. WADO-RS metadata of the 300-instance series (`…/series/{uid}/metadata`), repeated:
   median and p95, Vireo/Orthanc ratio of the p95.
5. 100,000 series written straight into a fresh Vireo database (realistic attributes,
   50,000 studies, 10,000 patients), Vireo started on it: QIDO-RS series searches, p95.

Targets (issue 8): both ratios <= 1.0 (Vireo at least as fast), QIDO p95 at 100k <= 50 ms.
Runs inside a private network namespace (re-executes itself under `unshare -n`; needs
root), because Orthanc 1.10 listens on every interface.

    .venv/bin/python bench/dicomweb.py [--repeat 40] [--json out.json] [--skip-100k]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from tests.factories import write_series  # noqa: E402
from tests.support.orthanc import OrthancProcess  # noqa: E402
from tests.support.vireo import VireoProcess  # noqa: E402

CACHE = Path(tempfile.gettempdir()) / "vireo-dicomweb-bench"
NETNS_MARK = "VIREO_BENCH_NETNS"
BIG_SERIES_SLICES = 300
TARGET_RATIO = 1.0
TARGET_100K_MS = 50.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _interfaces() -> set[str]:
    with open("/proc/self/net/dev") as f:
        return {line.split(":", 1)[0].strip() for line in f.readlines()[2:] if ":" in line}


def ensure_private_netns() -> None:
    if _interfaces() - {"lo"}:
        if os.environ.get(NETNS_MARK):
            raise SystemExit("bench: still see non-loopback interfaces after unshare -n; refusing to run")
        if os.geteuid() != 0:
            raise SystemExit("bench: needs root to create a private network namespace (unshare -n)")
        env = dict(os.environ, **{NETNS_MARK: "1"})
        os.execvpe("unshare", ["unshare", "-n", "--", sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]], env)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


# --------------------------------------------------------------------------- data


def dataset() -> dict[str, Any]:
    """Generate (or reuse) the benchmark data; returns its manifest."""
    manifest_path = CACHE / "manifest.json"
    if manifest_path.exists():
        return json.loads(manifest_path.read_text())
    log("generating data (once)")
    CACHE.mkdir(parents=True, exist_ok=True)
    data = CACHE / "dicom"
    big = write_series(data, modality="CT", slices=BIG_SERIES_SLICES, rows=512, columns=512, patient_id="BENCH0000",
                       patient_name="Big^Series", seed=1000, study_date="20240601")
    small = []
    modalities = ["CT", "MR"]
    for patient in range(1, 13):
        for study in range(2):
            for number in range(1, 3 + (patient % 2)):
                modality = modalities[(patient + study) % 2]
                s = write_series(data, modality=modality, slices=4, rows=64, columns=64, patient_id=f"BENCH{patient:04d}",
                                 patient_name=f"Patient{patient:02d}^Bench", seed=1000 + patient * 10 + study,
                                 study_date=f"202{patient % 5}0{1 + study}15", series_number=number,
                                 series_description=("Axial 5mm" if number == 1 else f"Recon {number}"))
                small.append({"study": s.study_uid, "series": s.series_uid, "modality": modality})
    manifest = {"data": str(data), "big_study": big.study_uid, "big_series": big.series_uid, "small": small,
                "instances": BIG_SERIES_SLICES + 4 * len(small)}
    manifest_path.write_text(json.dumps(manifest))
    return manifest


def dcmsend(port: int, called: str, directory: str) -> None:
    env = {**os.environ, "TCP_NODELAY": "1"}
    subprocess.run(["dcmsend", "127.0.0.1", str(port), "--scan-directories", "--recurse", "--call", called, directory],
                   check=True, capture_output=True, env=env, timeout=1800)


# --------------------------------------------------------------------------- timing


def url(path: str, params: dict[str, str] | None) -> str:
    """A query URL with `*` and `,` left as they are: Orthanc does not decode %2A, so a quoted wildcard matches nothing there."""
    if not params:
        return path
    return path + "?" + "&".join(f"{k}={quote(v, safe='*,-')}" for k, v in params.items())


def timed(client: httpx.Client, path: str, params: dict[str, str] | None, repeat: int, check: Any) -> list[float]:
    """Milliseconds per request after two warm-up requests; `check(response)` validates every answer."""
    target = url(path, params)
    for _ in range(2):
        check(client.get(target))
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        response = client.get(target)
        body = response.content
        samples.append((time.perf_counter() - start) * 1000)
        check(response, body)
    return samples


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def qido_queries(manifest: dict[str, Any]) -> list[tuple[str, str, dict[str, str]]]:
    some_study = manifest["small"][5]["study"]
    return [
        ("PatientID exact", "/series", {"PatientID": "BENCH0003"}),
        ("Modality", "/series", {"Modality": "MR"}),
        ("SeriesDescription wildcard", "/series", {"SeriesDescription": "Axial*"}),
        ("StudyDate range", "/series", {"StudyDate": "20220101-20231231"}),
        ("series of a study", f"/studies/{some_study}/series", {}),
    ]


def expect_json_list(expected: int | None = None) -> Any:
    def check(response: httpx.Response, body: bytes | None = None) -> None:
        if response.status_code != 200:
            raise SystemExit(f"bench: {response.request.url} answered {response.status_code}: {response.text[:300]}")
        if expected is not None and body is not None:
            count = len(json.loads(body))
            if count != expected:
                raise SystemExit(f"bench: {response.request.url} gave {count} items, expected {expected}")
    return check


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far: what a request costs, whatever else the machine is doing."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_search_warm_up(vireo: VireoProcess) -> None:
    """Vireo loads its search columns in the background after start; a listing waits for them. Time nothing before."""
    with httpx.Client(base_url=vireo.url, auth=vireo.auth, timeout=600) as client:
        client.get("/api/series", params={"limit": "1"}).raise_for_status()


def compare(manifest: dict[str, Any], repeat: int, workdir: Path) -> dict[str, Any]:
    (workdir / "vireo").mkdir(parents=True)
    (workdir / "orthanc").mkdir(parents=True)
    vireo = VireoProcess(workdir / "vireo" / "data")
    orthanc = OrthancProcess(workdir / "orthanc", dicomweb=True)
    results: dict[str, Any] = {}
    try:
        vireo.start()
        orthanc.start()
        log("loading both servers with dcmsend")
        dcmsend(vireo.dicom_port, "BENCH", manifest["data"])
        dcmsend(orthanc.dicom_port, "BENCH", manifest["data"])
        vireo.wait_for_instances(manifest["instances"], timeout=120)
        wait_for_search_warm_up(vireo)
        orthanc_count = orthanc.get("/statistics")["CountInstances"]
        if orthanc_count != manifest["instances"]:
            raise SystemExit(f"bench: Orthanc holds {orthanc_count} instances, expected {manifest['instances']}")
        roots = {"vireo": (f"{vireo.url}/dicomweb", vireo.auth), "orthanc": (f"{orthanc.url}/dicom-web", None)}
        clients = {name: httpx.Client(base_url=root, auth=auth, timeout=120) for name, (root, auth) in roots.items()}
        # Same answers from both before timing anything.
        for label, path, params in qido_queries(manifest):
            counts = {name: len(client.get(url(path, params)).json()) for name, client in clients.items()}
            if len(set(counts.values())) != 1:
                raise SystemExit(f"bench: {label} differs: {counts}")
            results.setdefault("qido_counts", {})[label] = counts["vireo"]
        log(f"QIDO-RS series searches, {repeat} of each kind")
        qido: dict[str, dict[str, list[float]]] = {name: {} for name in clients}
        for _ in range(2):  # interleave the servers' runs so drifting machine load hits both alike
            for label, path, params in qido_queries(manifest):
                for name, client in clients.items():
                    qido[name].setdefault(label, []).extend(
                        timed(client, path, params, repeat // 2, expect_json_list(results["qido_counts"][label])))
        metadata_path = f"/studies/{manifest['big_study']}/series/{manifest['big_series']}/metadata"
        log(f"WADO-RS metadata of the {BIG_SERIES_SLICES}-instance series, {repeat} times")
        metadata: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(2):
            for name, client in clients.items():
                metadata[name].extend(timed(client, metadata_path, None, max(5, repeat // 2), expect_json_list(BIG_SERIES_SLICES)))
        for client in clients.values():
            client.close()
        for name in clients:
            every = [s for samples in qido[name].values() for s in samples]
            results[name] = {
                "qido_p95_ms": p95(every),
                "qido_median_ms": statistics.median(every),
                "qido_median_by_query_ms": {label: statistics.median(samples) for label, samples in qido[name].items()},
                "qido_p95_by_query_ms": {label: p95(samples) for label, samples in qido[name].items()},
                "metadata_median_ms": statistics.median(metadata[name]),
                "metadata_p95_ms": p95(metadata[name]),
            }
        results["qido_ratio"] = results["vireo"]["qido_p95_ms"] / results["orthanc"]["qido_p95_ms"]
        results["metadata_ratio"] = results["vireo"]["metadata_p95_ms"] / results["orthanc"]["metadata_p95_ms"]
    finally:
        vireo.stop()
        orthanc.stop()
    return results


# --------------------------------------------------------------------------- 100k series


DESCRIPTIONS = ["Axial 5mm", "Axial 1mm", "Lung 1mm", "Bone", "Sag T1", "Ax T2", "FLAIR", "DWI", "Scout", "Recon 3"]
MODALITIES = ["CT", "CT", "CT", "MR", "MR", "PT", "CR", "US", "DX", "MG"]
FAMILIES = ["Smith", "Jones", "Garcia", "Muller", "Rossi", "Dubois", "Kowalski", "Nakamura", "Silva", "Novak", "Larsen", "Ivanov"]


def fill_100k(data_dir: Path, series_count: int) -> dict[str, Any]:
    """Write patients, studies and series rows straight into a new Vireo database (no files: QIDO reads only the index)."""
    from core.db import Database
    from core.models import Patient, Series, Study
    from core.search.indexing import index_series

    data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(f"sqlite:///{(data_dir / 'vireo.db').resolve()}")
    db.migrate()
    rng = random.Random(7)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    patients, studies, series = [], [], []
    patient_count, study_count = series_count // 10, series_count // 2
    for p in range(patient_count):
        name = f"{FAMILIES[p % len(FAMILIES)]}^{chr(65 + p % 26)}{p:05d}"
        patients.append({"id": p + 1, "patient_id": f"P{p:06d}", "patient_name": name, "created": now,
                         "attributes": {"PatientID": f"P{p:06d}", "PatientName": name, "PatientSex": "MF"[p % 2],
                                        "PatientBirthDate": f"19{40 + p % 60}0{1 + p % 9}1{p % 10}"}})
    start = datetime(2015, 1, 1)
    for s in range(study_count):
        patient = patients[s % patient_count]
        date = (start + timedelta(days=rng.randrange(3650))).strftime("%Y%m%d")
        uid = f"1.2.826.0.1.3680043.8.498.9{s:09d}"
        studies.append({"study_uid": uid, "patient_pk": patient["id"], "study_date": date, "study_description": "CT CHEST" if s % 3 else "MR BRAIN",
                        "created": now, "attributes": {**patient["attributes"], "StudyDate": date, "StudyTime": "101500",
                                                       "AccessionNumber": f"A{s:08d}", "StudyDescription": "CT CHEST" if s % 3 else "MR BRAIN",
                                                       "ReferringPhysicianName": "Ref^Doc", "StudyID": str(s)}})
    for n in range(series_count):
        study = studies[n % study_count]
        modality = MODALITIES[rng.randrange(len(MODALITIES))]
        description = DESCRIPTIONS[rng.randrange(len(DESCRIPTIONS))]
        number = n // study_count + 1
        series.append({
            "series_uid": f"1.2.826.0.1.3680043.8.498.8{n:09d}", "study_uid": study["study_uid"], "modality": modality,
            "series_description": description, "series_number": number, "arrived": now, "updated": now,
            "instance_count": rng.randrange(1, 400), "size_bytes": 0, "missing_instance_numbers": [], "is_complete": True,
            "attributes": {"Modality": modality, "SeriesDescription": description, "SeriesNumber": number, "SeriesDate": study["study_date"],
                           "SeriesTime": "101600", "BodyPartExamined": "CHEST", "Manufacturer": "Vireo Synthetic",
                           "SliceThickness": 1.0 + n % 5, "ProtocolName": description, "FrameOfReferenceUID": f"1.2.3.{n}"},
        })
    with db.engine.begin() as conn:
        conn.execute(Patient.__table__.insert(), patients)  # type: ignore[attr-defined]
        conn.execute(Study.__table__.insert(), studies)  # type: ignore[attr-defined]
        for chunk in range(0, len(series), 20000):
            conn.execute(Series.__table__.insert(), series[chunk : chunk + 20000])  # type: ignore[attr-defined]
    with db.engine.begin() as conn:
        # The search index a real ingest writes in the same commit (core.search), so Vireo starts as it would on such data.
        index_series(conn, [row["series_uid"] for row in series])
    with db.engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
    db.dispose()
    return {"some_study": studies[1234]["study_uid"], "some_patient": patients[321]["patient_id"]}


def at_scale(series_count: int, repeat: int, workdir: Path) -> dict[str, Any]:
    log(f"writing {series_count:,} series into a fresh Vireo database")
    data_dir = workdir / "vireo-100k" / "data"
    started = time.perf_counter()
    facts = fill_100k(data_dir, series_count)
    log(f"  written in {time.perf_counter() - started:.1f} s")
    vireo = VireoProcess(data_dir)
    queries = [
        ("PatientID exact", "/series", {"PatientID": facts["some_patient"]}),
        ("Modality, first page", "/series", {"Modality": "MR", "limit": "100"}),
        ("StudyDate month", "/series", {"StudyDate": "20200301-20200331", "limit": "100"}),
        ("SeriesDescription wildcard", "/series", {"SeriesDescription": "Lung*", "limit": "100"}),
        ("PatientName wildcard", "/series", {"PatientName": "garcia*", "limit": "100"}),
        ("series of a study", f"/studies/{facts['some_study']}/series", {}),
        ("all series, page 11", "/series", {"limit": "100", "offset": "1000"}),
        ("studies, OHIF's list", "/studies", {"limit": "101", "offset": "0", "fuzzymatching": "false",
                                              "includefield": "00081030,00080060,00080090,00100030"}),
    ]
    results: dict[str, Any] = {}
    try:
        vireo.start()
        wait_for_search_warm_up(vireo)
        assert vireo.process is not None
        with httpx.Client(base_url=f"{vireo.url}/dicomweb", auth=vireo.auth, timeout=120) as client:
            samples: dict[str, list[float]] = {}
            for label, path, params in queries:
                before = cpu_seconds(vireo.process.pid)
                samples[label] = timed(client, path, params, repeat, expect_json_list())
                results.setdefault("cpu_ms_per_request", {})[label] = (cpu_seconds(vireo.process.pid) - before) * 1000 / (repeat + 2)
                results.setdefault("counts", {})[label] = len(client.get(url(path, params)).json())
        every = [s for values in samples.values() for s in values]
        results["qido_p95_ms"] = p95(every)
        results["qido_median_ms"] = statistics.median(every)
        results["qido_p95_by_query_ms"] = {label: p95(values) for label, values in samples.items()}
        results["qido_median_by_query_ms"] = {label: statistics.median(values) for label, values in samples.items()}
    finally:
        vireo.stop()
    return results


# --------------------------------------------------------------------------- report


def report(results: dict[str, Any]) -> bool:
    ok = True
    compared = results.get("compare")
    if compared:
        print("\nQIDO-RS series search, ms (same data in both)")
        print(f"  {'query':<28} {'results':>7} {'Vireo p95':>10} {'Orthanc p95':>12} {'Vireo median':>13} {'Orthanc median':>15}")
        v, o = compared["vireo"], compared["orthanc"]
        for label, count in compared["qido_counts"].items():
            print(f"  {label:<28} {count:>7} {v['qido_p95_by_query_ms'][label]:>10.1f} {o['qido_p95_by_query_ms'][label]:>12.1f} "
                  f"{v['qido_median_by_query_ms'][label]:>13.1f} {o['qido_median_by_query_ms'][label]:>15.1f}")
        print(f"  {'all queries':<28} {'':>7} {v['qido_p95_ms']:>10.1f} {o['qido_p95_ms']:>12.1f} {v['qido_median_ms']:>13.1f} {o['qido_median_ms']:>15.1f}")
        print(f"\nWADO-RS metadata of a {BIG_SERIES_SLICES}-instance series, ms")
        print(f"  {'':<28} {'':>7} {'Vireo':>8} {'Orthanc':>8}")
        for key, label in (("metadata_median_ms", "median"), ("metadata_p95_ms", "p95")):
            print(f"  {label:<28} {'':>7} {compared['vireo'][key]:>8.1f} {compared['orthanc'][key]:>8.1f}")
    scale = results.get("scale")
    if scale:
        print(f"\nQIDO-RS at {results['series_count']:,} series (Vireo), ms")
        print(f"  {'query':<28} {'results':>7} {'p95':>8} {'median':>8} {'Vireo CPU/request':>18}")
        for label, value in scale["qido_p95_by_query_ms"].items():
            print(f"  {label:<28} {scale['counts'][label]:>7} {value:>8.1f} {scale['qido_median_by_query_ms'][label]:>8.1f} "
                  f"{scale['cpu_ms_per_request'][label]:>18.1f}")
        print(f"  {'all queries':<28} {'':>7} {scale['qido_p95_ms']:>8.1f} {scale['qido_median_ms']:>8.1f}")
    print(f"\nMachine load average (1 min) before/after: {results['load_before']:.1f} / {results['load_after']:.1f} on {os.cpu_count()} cores"
          " (other work on the machine inflates p95s; benchmark alone)")
    print("\nTargets")
    if compared:
        for key, label in (("qido_ratio", "QIDO-RS series search p95, Vireo/Orthanc"), ("metadata_ratio", "WADO-RS metadata p95, Vireo/Orthanc")):
            passed = compared[key] <= TARGET_RATIO
            ok &= passed
            print(f"  {label:<45} <= {TARGET_RATIO:.1f}   {compared[key]:.2f}   {'PASS' if passed else 'FAIL'}")
    if scale:
        passed = scale["qido_p95_ms"] <= TARGET_100K_MS
        ok &= passed
        print(f"  {'QIDO-RS p95 at ' + format(results['series_count'], ',') + ' series, ms':<45} <= {TARGET_100K_MS:.0f}    "
              f"{scale['qido_p95_ms']:.1f}   {'PASS' if passed else 'FAIL'}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=40, help="requests per query kind (default 40)")
    parser.add_argument("--series", type=int, default=100_000, help="series in the at-scale database (default 100,000)")
    parser.add_argument("--skip-100k", action="store_true", help="only the Vireo/Orthanc comparison")
    parser.add_argument("--skip-compare", action="store_true", help="only the at-scale run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    ensure_private_netns()
    workdir = Path(tempfile.mkdtemp(prefix="vireo-dicomweb-bench-"))
    results: dict[str, Any] = {"series_count": args.series, "repeat": args.repeat, "load_before": os.getloadavg()[0]}
    try:
        if not args.skip_compare:
            results["compare"] = compare(dataset(), args.repeat, workdir)
        if not args.skip_100k:
            results["scale"] = at_scale(args.series, args.repeat, workdir)
    finally:
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    results["load_after"] = os.getloadavg()[0]
    ok = report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
