#!/usr/bin/env python3
"""Time per series of the analysis DAGs' work on a 512×512×300 CT phantom (issue 18, item 7).

Writes a demo CT torso phantom (app/demo/phantoms.py) of `--size`² × `--slices` as DICOM, then,
per run, does what one `segment-body-and-lungs` job does with a series — read the slices into a
volume (ingest.results_writeback.volume_from_datasets), segment body and lungs
(ingest.analysis.body_lungs), build the SEG (highdicom) and encode it as Part 10 — and prints
each stage's seconds and their total, plus the Dice of each segment against the phantom's
geometry (app/demo/phantom_truth.py). Storing into the PACS (intake and indexing of one SEG
instance) is not part of the figure: it is the receiver's cost, measured by bench/ingest.py.

    .venv/bin/python bench/analysis.py [--runs 2] [--slices 300] [--size 512] [--no-measure]

With each run, the `measure-segments` figure for that SEG (see `measure_run`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.demo import phantom_truth as truth  # noqa: E402
from app.demo import phantoms as ph  # noqa: E402
from ingest.analysis import segmentation_dags as dags  # noqa: E402
from ingest.results_writeback import Algorithm, build_seg, part10_bytes, volume_from_datasets  # noqa: E402
from pydicom import dcmread  # noqa: E402


def one_run(paths: list[Path], ground: dict[str, np.ndarray]) -> dict[str, float]:
    times: dict[str, float] = {}
    started, cpu = time.perf_counter(), time.process_time()
    image, datasets = volume_from_datasets([dcmread(p) for p in paths])
    times["read"] = time.perf_counter() - started
    mark = time.perf_counter()
    segments = dags._segments_of("CT", image)
    times["segment"] = time.perf_counter() - mark
    mark = time.perf_counter()
    seg = build_seg(datasets, segments, algorithm=Algorithm(dags.ALGORITHM_NAME, dags.VERSION), series_description="Body and lungs (automatic)",
                    uid_seed="bench")
    encoded = part10_bytes(seg)
    times["seg"] = time.perf_counter() - mark
    times["total"] = time.perf_counter() - started
    times["cpu"] = time.process_time() - cpu  # CPU seconds of this process (all threads): less at the mercy of other load than wall time
    order = [int(ds.InstanceNumber) - 1 for ds in datasets]
    for segment in segments:
        expected = ground[segment.label][order]
        times[f"dice {segment.label}"] = float(2 * (segment.mask & expected).sum() / (segment.mask.sum() + expected.sum()))
    times["seg MB"] = len(encoded) / 1e6
    return times


def measure_run(seg_bytes: bytes, image: object, datasets: list) -> dict[str, float]:
    """What one `measure-segments` job does with a SEG once its image is read (issue 18 item 4; target ≤ 5 s per SEG):
    decode the SEG's masks onto the image, measure every segment, build the TID 1500 SR. Reading the image is
    the "read" figure above; storing the SR (one small instance) is the receiver's cost (bench/ingest.py)."""
    from io import BytesIO

    import highdicom as hd
    import SimpleITK as sitk
    from pydicom import dcmread

    from ingest.analysis import measurement_dags as mdags
    from ingest.analysis.segment_measurements import Geometry, measure, sr_measurements
    from ingest.results_writeback import build_measurement_sr, seg_masks

    times: dict[str, float] = {}
    started = time.perf_counter()
    seg = dcmread(BytesIO(seg_bytes))
    masks = seg_masks(seg, datasets)
    times["masks"] = time.perf_counter() - started
    mark = time.perf_counter()
    values, geometry = sitk.GetArrayViewFromImage(image), Geometry.of(image)
    labels = mdags.segment_labels(seg)
    report = [{"segment_number": n, "label": labels[n], "measurements": sr_measurements(measure(m, values, geometry), "[hnsf'U]")}
              for n, m in sorted(masks.items())]
    times["measure"] = time.perf_counter() - mark
    mark = time.perf_counter()
    segmentation = seg if isinstance(seg, hd.seg.Segmentation) else hd.seg.Segmentation.from_dataset(seg, copy=False)
    build_measurement_sr(datasets, report, algorithm=Algorithm(mdags.MEASURE_ALGORITHM, mdags.VERSION), seg=segmentation,
                         series_description="Measurements (bench)", uid_seed="bench")
    times["sr"] = time.perf_counter() - mark
    times["total"] = time.perf_counter() - started
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--no-measure", dest="measure", action="store_false", help="skip the measure-segments figure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vireo-bench-analysis-") as tmp:
        study = ph.Study(ph.Patient("BENCH-1", "Bench^Analysis", "F", "19700101"), "bench-analysis", "20260101", "CT", "CHEST")
        spec = ph.SeriesSpec(study, "CT", 2, "CT chest")
        started = time.perf_counter()
        paths = ph.write_series(spec, ph.ct_torso(9, False, slices=args.slices, size=args.size), Path(tmp) / "ct")
        ground = truth.ct_torso_truth(9, args.slices, args.size)
        print(f"phantom {args.size}×{args.size}×{args.slices} written in {time.perf_counter() - started:.1f} s")
        for run in range(1, args.runs + 1):
            t = one_run(paths, ground)
            dice = ", ".join(f"{k.removeprefix('dice ')} {v:.4f}" for k, v in t.items() if k.startswith("dice"))
            print(f"run {run}: segment-body-and-lungs {t['total']:.1f} s per series, {t['cpu']:.1f} CPU s "
                  f"(read {t['read']:.1f} s, segment {t['segment']:.1f} s, SEG {t['seg']:.1f} s, {t['seg MB']:.1f} MB); Dice: {dice}")
            if args.measure:
                image, datasets = volume_from_datasets([dcmread(p) for p in paths])
                segments = dags._segments_of("CT", image)
                seg_bytes = part10_bytes(build_seg(datasets, segments, algorithm=Algorithm(dags.ALGORITHM_NAME, dags.VERSION),
                                                   series_description="Body and lungs (automatic)", uid_seed="bench"))
                m = measure_run(seg_bytes, image, datasets)
                print(f"run {run}: measure-segments {m['total']:.1f} s per SEG of {len(segments)} segments "
                      f"(masks {m['masks']:.1f} s, measure {m['measure']:.1f} s, SR {m['sr']:.1f} s; reading the image is 'read' above)")


if __name__ == "__main__":
    main()
