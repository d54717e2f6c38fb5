"""User DAGs the engine tests load from VIREO_DAGS_DIR (copied there by the tests)."""

from __future__ import annotations

import subprocess
import sys
import time

from pydantic import BaseModel, ConfigDict, Field

from core.workflows.dag import Dag, DagInput, Step


class SleepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(0.0, ge=0, le=600)
    steps: int = Field(4, ge=1, le=1000)


def _echo(ctx):  # type: ignore[no-untyped-def]
    ctx.log.info("hello from job %s with %d series", ctx.spec.job_id, len(ctx.series_uids))
    print("printed to stdout")


def _sleep(ctx):  # type: ignore[no-untyped-def]
    n = ctx.conf.steps
    for i in range(n):
        time.sleep(ctx.conf.seconds / n)
        ctx.progress(i + 1, n)
        ctx.log.info("slept %d of %d", i + 1, n)


def _fail(ctx):  # type: ignore[no-untyped-def]
    ctx.log.info("about to fail")
    raise ValueError("this step always fails")


def _flaky(ctx):  # type: ignore[no-untyped-def]
    marker = ctx.work_dir / "attempts"
    attempts = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(attempts))
    if attempts < 3:
        raise RuntimeError(f"flaky failure {attempts}")
    ctx.log.info("succeeded on attempt %d", attempts)


def _tree(ctx):  # type: ignore[no-untyped-def]
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    (ctx.work_dir / "child.pid").write_text(str(child.pid))
    ctx.log.info("started child %d", child.pid)
    child.wait()


test_echo = Dag("test-echo", "Logs a line and prints one.", [Step("echo", _echo)], input=DagInput.NONE)
test_echo_series = Dag("test-echo-series", "Logs its series, one job per series.", [Step("echo", _echo)], input=DagInput.SERIES)
test_sleep = Dag("test-sleep", "Sleeps, reporting progress.", [Step("prepare", _echo), Step("sleep", _sleep), Step("after", _echo)],
                 config=SleepConfig, input=DagInput.NONE)
test_fail = Dag("test-fail", "Fails in its second step.", [Step("ok", _echo), Step("boom", _fail), Step("never", _echo)], input=DagInput.NONE)
test_flaky = Dag("test-flaky", "Succeeds on the third attempt.", [Step("flaky", _flaky, retries=2, retry_delay=0.1)], input=DagInput.NONE)
test_tree = Dag("test-tree", "Starts a child process and waits for it.", [Step("tree", _tree)], input=DagInput.NONE)
test_timeout = Dag("test-timeout", "Sleeps past its timeout.", [Step("sleep", _sleep)], config=SleepConfig, input=DagInput.NONE, timeout=1.0)
test_limited = Dag("test-limited", "At most one at a time.", [Step("sleep", _sleep)], config=SleepConfig, input=DagInput.NONE, max_active=1)
