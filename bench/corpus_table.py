"""Print the real-world corpus table (issue 14) as markdown: every DICOM file of pydicom and pydicom-data.

Runs exactly what tests/test_real_world_corpus.py runs: dcmsend of the whole corpus in one
association into one Vireo, then pynetdicom file by file (byte for byte) into fresh Vireos, and
per file the C-STORE status, stored, indexed, thumbnail, /rendered, default and `*` retrieve.

    .venv/bin/python bench/corpus_table.py                 # markdown: counts, and every file not nominal, with reasons
    .venv/bin/python bench/corpus_table.py --all           # every file
    .venv/bin/python bench/corpus_table.py --no-notes      # without the reasons column
    .venv/bin/python bench/corpus_table.py --write-expected  # also rewrite tests/corpus_expected.py
    .venv/bin/python bench/corpus_table.py --only CT_small,MR_small   # files whose name contains one of these
    .venv/bin/python bench/corpus_table.py --diff          # only the files that differ from tests/corpus_expected.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import corpus  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-notes", action="store_true", help="leave out the reasons column")
    parser.add_argument("--all", action="store_true", help="list every file, not only those that are not nominal")
    parser.add_argument("--write-expected", action="store_true", help=f"rewrite {corpus.EXPECTED_PATH.relative_to(ROOT)}")
    parser.add_argument("--only", default="", help="comma-separated substrings of file names to run (a quick look; never with --write-expected)")
    parser.add_argument("--diff", action="store_true", help="print only the rows that differ from the expected table")
    parser.add_argument("--workdir", type=Path, help="keep the Vireo data dirs and dcmsend's report here")
    parser.add_argument("--parallel", type=int, default=3, help="Vireo rounds run at once (default 3)")
    args = parser.parse_args()
    files = list(corpus.corpus())
    if args.only:
        if args.write_expected:
            parser.error("--write-expected needs the whole corpus")
        wanted = [w for w in args.only.split(",") if w]
        files = [f for f in files if any(w in f.name for w in wanted)]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="vireo-corpus-"))
    run = corpus.run_corpus(workdir, files, parallel=args.parallel)
    if args.diff:
        expected = {name: row for name, row in (corpus.load_expected() or {}).items() if name in run.results}
        print("\n".join(corpus.differences(expected, run.rows(), run.results)) or "no differences")
    else:
        print(corpus.markdown(run, with_notes=not args.no_notes, all_rows=args.all))
    if args.write_expected:
        corpus.write_expected(run.rows())
        print(f"wrote {corpus.EXPECTED_PATH}", file=sys.stderr)
    if not args.diff and (expected_now := corpus.load_expected()) is not None:
        diff = corpus.differences({n: r for n, r in expected_now.items() if n in run.results}, run.rows(), run.results)
        print(f"{len(diff)} files differ from {corpus.EXPECTED_PATH.name}" + "".join(f"\n  {line}" for line in diff), file=sys.stderr)
    print("\n".join(run.timings), file=sys.stderr)
    print(f"data dirs and dcmsend report under {workdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
