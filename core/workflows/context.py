"""What a step is given: `JobContext`, and the channel back to the engine (`Reporter`).

A context is built in the job's own process. Its database connection, PACS store and the
input series' files are opened on first use, so a trivial job pays for none of them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

    from core.db import Database
    from core.pacs_store import PacsStore

Reporter = Callable[[str, dict[str, Any]], None]

PROGRESS_INTERVAL = 0.2  # seconds between progress reports (the last one always goes)
RESULT_FILE = "result.json"
DEFAULT_RESULT_LIMIT = 1024 * 1024


class ResultTooLarge(ValueError):
    """A job's result is over its size limit: the job fails with this message rather than send it."""


class JobAborted(BaseException):
    """Raised in a job when it is aborted (by the engine, or by a step that checks `cancelled()`).

    A BaseException, so a step's own `except Exception` cannot swallow an abort.
    """


@dataclass(frozen=True)
class JobSpec:
    """Everything a job process needs to run one run of one job; plain data, so it pickles to any worker."""

    job_id: int
    run: int
    workflow_id: str
    dag_id: str
    dag_source: str
    conf: dict[str, Any]
    series: list[str]
    dataset: str | None
    username: str
    data_dir: str
    database_url: str
    instance_name: str

    @property
    def run_dir(self) -> Path:
        return run_dir(Path(self.data_dir), self.job_id, self.run)


def job_dir(data_dir: Path, job_id: int) -> Path:
    return data_dir / "jobs" / str(job_id)


def run_dir(data_dir: Path, job_id: int, run: int) -> Path:
    return job_dir(data_dir, job_id) / f"run-{run}"


@dataclass(frozen=True)
class InputSeries:
    """One input series: its UIDs, modality and instance files in slice order."""

    series_uid: str
    study_uid: str
    modality: str
    files: list[Path]


class JobContext:
    def __init__(self, spec: JobSpec, conf: BaseModel, report: Reporter, cancelled: Callable[[], bool], log: logging.Logger) -> None:
        self.spec = spec
        self.conf = conf
        self.log = log
        self._report = report
        self._cancelled = cancelled
        self._last_progress = 0.0
        self._db: Database | None = None
        self.work_dir = spec.run_dir / "work"
        self.output_dir = spec.run_dir / "output"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.output_dir.mkdir(parents=True, exist_ok=True)

    @property
    def series_uids(self) -> list[str]:
        return list(self.spec.series)

    @property
    def data_dir(self) -> Path:
        return Path(self.spec.data_dir)

    @property
    def db(self) -> Database:
        if self._db is None:
            from core.db import Database

            self._db = Database(self.spec.database_url)
        return self._db

    @cached_property
    def store(self) -> PacsStore:
        from core.pacs_store import PacsStore

        return PacsStore(self.data_dir / "pacs")

    @cached_property
    def series(self) -> list[InputSeries]:
        """The input series (those still in the index), with their files in slice order."""
        from sqlalchemy import select

        from core.models import Instance, Series

        found: dict[str, InputSeries] = {}
        with self.db.engine.connect() as conn:
            for start in range(0, len(self.spec.series), 500):
                chunk = self.spec.series[start : start + 500]
                rows = conn.execute(select(Series.series_uid, Series.study_uid, Series.modality).where(Series.series_uid.in_(chunk))).all()  # type: ignore[attr-defined]
                paths: dict[str, list[Path]] = {uid: [] for uid, _, _ in rows}
                query = (
                    select(Instance.series_uid, Instance.path)
                    .where(Instance.series_uid.in_(list(paths)))  # type: ignore[attr-defined]
                    .order_by(Instance.series_uid, Instance.slice_position, Instance.instance_number, Instance.sop_instance_uid)  # type: ignore[arg-type]
                )
                for uid, path in conn.execute(query):
                    paths[uid].append(self.store.path(path))
                for uid, study, modality in rows:
                    found[uid] = InputSeries(uid, study, modality, paths[uid])
        missing = [uid for uid in self.spec.series if uid not in found]
        if missing:
            self.log.warning("%d input series are no longer in the index: %s", len(missing), ", ".join(missing[:5]))
        return [found[uid] for uid in self.spec.series if uid in found]

    def progress(self, done: int, total: int, force: bool = False) -> None:
        """Report `done` of `total`; reports are thinned to a few per second (the last one always goes)."""
        now = time.monotonic()
        if force or done >= total or now - self._last_progress >= PROGRESS_INTERVAL:
            self._last_progress = now
            self._report("progress", {"done": int(done), "total": int(total)})

    def cancelled(self) -> bool:
        return self._cancelled()

    def check_cancelled(self) -> None:
        if self._cancelled():
            raise JobAborted("aborted")

    def series_changed(self, series_uids: list[str] | set[str], thumbnails: bool = False) -> None:
        """Tell the running Vireo that these series changed (pages showing them refresh)."""
        self._report("series_changed", {"series": sorted(series_uids), "thumbnails": thumbnails})

    def report_series_deleted(self, series_uids: list[str] | None) -> None:
        """Tell the running Vireo that series left the index (None: any may have, e.g. after a reindex)."""
        self._report("series_deleted", {"series": series_uids})

    def set_result(self, payload: Any, limit: int | None = None, files: list[Path] | None = None) -> int:
        """Hand back a JSON result (a federated round's runner result); returns its size in bytes.

        `files` (small ones: they count against the limit) travel inside the result, which must then be a
        JSON object: as `"files": {name: {"base64": …, "bytes": n}}`. The limit is `limit`, else the
        configuration's `max_result_bytes`, else 1 MiB; a larger result raises `ResultTooLarge`, so the step
        fails with a clear message instead.
        """
        import base64
        import json
        import os

        if files:
            if not isinstance(payload, dict) or "files" in payload:
                raise TypeError("a result with files must be a JSON object without a 'files' key of its own")
            attached = {}
            for path in files:
                data = Path(path).read_bytes()
                attached[Path(path).name] = {"base64": base64.b64encode(data).decode(), "bytes": len(data)}
            payload = {**payload, "files": attached}
        data = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        limit = limit or getattr(self.conf, "max_result_bytes", None) or DEFAULT_RESULT_LIMIT
        if len(data) > limit:
            raise ResultTooLarge(f"the result is {len(data)} bytes, over the limit of {limit} bytes (max_result_bytes)")
        part = self.spec.run_dir / (RESULT_FILE + ".part")
        part.write_bytes(data)
        os.replace(part, self.spec.run_dir / RESULT_FILE)
        return len(data)

    def output_file(self, name: str) -> Path:
        """A path for a file users download from the job (download-series, collect-metadata)."""
        return self.output_dir / name

    def close(self) -> None:
        if self._db is not None:
            self._db.dispose()
