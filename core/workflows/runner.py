"""Runs one run of one job, inside the job's own process: steps in order, one log file per step.

Every executor ends up here (`run_job`), so local and Dask jobs behave the same: the step's
log file receives the job logger's records and, when the job owns its process, the
process's stdout and stderr too (so the output of tools a step starts lands in its log).
What happens is told to the engine through `report` as it happens.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from datetime import UTC, datetime

from core.workflows.context import JobAborted, JobContext, JobSpec, Reporter
from core.workflows.registry import DagRegistry

_registry = DagRegistry()


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat(value: datetime) -> str:
    # core.timeutil says the same, but importing it costs a job process SQLAlchemy's start-up
    return value.isoformat().replace("+00:00", "Z")


def step_log_name(index: int, name: str) -> str:
    return f"{index + 1:02d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.log"


class _StepLog:
    """Points the job logger (and, in a job process, fds 1 and 2) at the current step's file."""

    def __init__(self, logger: logging.Logger, redirect_fds: bool) -> None:
        self.logger = logger
        self.redirect_fds = redirect_fds
        self.handler: logging.Handler | None = None

    def open(self, path: os.PathLike[str]) -> None:
        self.close()
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.handler = handler
        self.logger.addHandler(handler)
        if self.redirect_fds:
            sys.stdout.flush()
            sys.stderr.flush()
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)

    def close(self) -> None:
        if self.handler is not None:
            if self.redirect_fds:
                sys.stdout.flush()
                sys.stderr.flush()
            self.logger.removeHandler(self.handler)
            self.handler.close()
            self.handler = None


def run_job(spec: JobSpec, report: Reporter, cancelled: Callable[[], bool], redirect_fds: bool = False) -> dict[str, Any]:
    """Run every step of the job's DAG; returns (and reports) how the run ended."""
    logs = spec.run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if redirect_fds:  # the job owns its process (group): a restarted Vireo can stop it if it outlives its engine
        (spec.run_dir / "pid").write_text(str(os.getpid()))
    logger = logging.getLogger(f"vireo.job.{spec.job_id}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    step_log = _StepLog(logger, redirect_fds)
    ctx: JobContext | None = None
    failed_step: int | None = None
    try:
        _registry.load_source(spec.dag_source)
        dag = _registry.get(spec.dag_id)
        report("started", {"steps": [s.name for s in dag.steps], "pid": os.getpid()})
        conf = dag.validate_conf(spec.conf)
        ctx = JobContext(spec, conf, report, cancelled, logger)
        for index, step in enumerate(dag.steps):
            failed_step = index
            step_log.open(logs / step_log_name(index, step.name))
            started = isoformat(utcnow())
            for attempt in range(1, step.retries + 2):
                ctx.check_cancelled()
                report("step", {"index": index, "name": step.name, "state": "running", "attempt": attempt, "started": started})
                logger.info("step %s, attempt %d of %d", step.name, attempt, step.retries + 1)
                try:
                    step.run(ctx)
                    break
                except JobAborted:
                    raise
                except Exception as exc:
                    logger.error("step %s failed: %s\n%s", step.name, exc, traceback.format_exc())
                    if attempt > step.retries:
                        report("step", {"index": index, "name": step.name, "state": "failed", "attempt": attempt, "started": started, "ended": isoformat(utcnow())})
                        raise _StepFailed(step.name, exc) from exc
                    _sleep_unless_cancelled(step.retry_delay, ctx)
            report("step", {"index": index, "name": step.name, "state": "finished", "attempt": attempt, "started": started, "ended": isoformat(utcnow())})
            step_log.close()
        failed_step = None
        outcome: dict[str, Any] = {"status": "finished", "error": ""}
    except JobAborted:
        logger.warning("aborted")
        outcome = {"status": "aborted", "error": "aborted"}
    except _StepFailed as exc:
        outcome = {"status": "failed", "error": f"step {exc.step} failed: {exc.cause}"}
    except Exception as exc:  # the DAG could not be loaded or its configuration is no longer valid
        logger.error("%s", traceback.format_exc())
        outcome = {"status": "failed", "error": str(exc) or type(exc).__name__}
    finally:
        step_log.close()
        if ctx is not None:
            ctx.close()
    outcome["failed_step"] = failed_step
    report("ended", outcome)
    return outcome


class _StepFailed(Exception):
    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(f"step {step} failed: {cause}")
        self.step = step
        self.cause = f"{type(cause).__name__}: {cause}" if not str(cause) else str(cause)


def _sleep_unless_cancelled(seconds: float, ctx: JobContext) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ctx.check_cancelled()
        time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


def own_process_group() -> Callable[[], bool]:
    """Make this process a process group of its own and turn SIGTERM into `JobAborted`.

    Returns the cancellation check. The engine's abort sends SIGTERM to the whole group (the
    job and every tool it started), then SIGKILL after a short grace.
    """
    if os.getsid(0) != os.getpid():  # already a session leader when started with start_new_session
        os.setsid()
    state = {"cancelled": False}

    def on_term(_signum: int, _frame: Any) -> None:
        if not state["cancelled"]:
            state["cancelled"] = True
            raise JobAborted("aborted")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return lambda: state["cancelled"]
