"""Text for people: readable local times, workflow names that say what ran on what, buttons that
are disabled when they would do nothing, filter counts that follow the search, counted bars."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from app.series_browsing import values_matching
from app.workflow_actions import default_name
from bench.search_corpus import generate, load
from components.dashboard import _figure
from components.local_time import time_text, zone_from_name
from components.status import short_time, utc_tooltip
from components.workflow_table import job_row, workflow_row
from core.db import Database
from core.search.service import SeriesSearch
from core.selection import Selection
from core.timeutil import exact_utc, readable_time, relative_time

BERLIN = ZoneInfo("Europe/Berlin")
MOMENT = datetime(2026, 12, 2, 10, 16, 5, 123456, tzinfo=UTC)


# --- times ----------------------------------------------------------------------------------------

def test_readable_time_is_local_without_seconds_or_microseconds() -> None:
    assert readable_time(MOMENT, BERLIN) == "2 Dec 2026, 11:16"
    assert readable_time(MOMENT, UTC) == "2 Dec 2026, 10:16"
    assert readable_time(MOMENT.replace(tzinfo=None), BERLIN) == "2 Dec 2026, 11:16"  # naive is UTC, as stored
    assert readable_time(datetime(2026, 7, 1, 22, 30, tzinfo=UTC), ZoneInfo("Asia/Tokyo")) == "2 Jul 2026, 07:30"  # the next day there


@pytest.mark.parametrize(("delta", "text"), [
    (timedelta(seconds=10), "just now"),
    (timedelta(minutes=3), "3 min ago"),
    (timedelta(minutes=59, seconds=50), "1 h ago"),
    (timedelta(hours=5), "5 h ago"),
    (timedelta(days=3), "3 d ago"),
    (timedelta(days=90), "3 mo ago"),
    (timedelta(days=800), "2 y ago"),
    (-timedelta(hours=2), "in 2 h"),
])
def test_relative_time(delta: timedelta, text: str) -> None:
    assert relative_time(MOMENT, MOMENT + delta) == text


def test_exact_utc_and_the_status_helpers() -> None:
    assert exact_utc(MOMENT.astimezone(BERLIN)) == "2026-12-02 10:16:05 UTC"
    assert short_time("2026-12-02T10:16:05.123456Z", BERLIN) == "2 Dec 2026, 11:16"
    assert short_time("2026-12-02T10:16:05.123456Z") == "2 Dec 2026, 10:16"
    assert short_time(None) == "" and short_time("not a time") == "not a time"
    assert utc_tooltip("2026-12-02T10:16:05.123456Z") == "2026-12-02 10:16:05 UTC" and utc_tooltip(None) == ""
    assert time_text(None, BERLIN) == "—"
    assert time_text(MOMENT, BERLIN, now=MOMENT + timedelta(minutes=3)) == "3 min ago · 2 Dec 2026, 11:16"


def test_an_unknown_browser_zone_reads_as_utc() -> None:
    assert zone_from_name("Europe/Berlin") == BERLIN
    for name in ("", None, "Mars/Olympus", "../../etc/passwd", 42):
        assert zone_from_name(name) is UTC


# --- workflow names and rows ----------------------------------------------------------------------

def test_default_workflow_names_say_what_runs_on_what() -> None:
    assert default_name("collect-metadata", dataset="brain-mr") == "collect-metadata on brain-mr"
    assert default_name("collect-metadata", Selection.of(dataset="brain-mr")) == "collect-metadata on brain-mr"
    assert default_name("collect-metadata", Selection.of_series(["1.2.3", "1.2.4", "1.2.5"])) == "collect-metadata on 3 series"
    assert default_name("collect-metadata", series=["1.2.3"]) == "collect-metadata on 1 series"
    assert default_name("collect-metadata", Selection.of("Modality:CT", dataset="brain-mr")) == "collect-metadata on query Modality:CT in brain-mr"
    assert default_name("collect-metadata", Selection.of("*")) == "collect-metadata on every series"
    assert default_name("import-dicom") == "import-dicom"
    assert len(default_name("d", Selection.of("x" * 500))) == 200  # the engine's limit


def _job(status: str) -> dict[str, Any]:
    return {"id": 7, "dag_id": "test-sleep", "status": status, "progress": {"done": 1, "total": 2}, "created": "2026-12-02T10:16:05.123456Z",
            "updated": "2026-12-02T10:17:00.5Z", "runner_instance": "a", "owner_instance": "a", "conf": {"seconds": 1}, "duration": 3.0, "error": None}


def _workflow(*statuses: str) -> dict[str, Any]:
    return {"id": "9f5f05b2-012a-4c8b-9a44-1e1b96600000", "name": "n", "dataset": "", "series": [], "selection": None,
            "created": "2026-12-02T10:16:05.123456Z", "updated": "2026-12-02T10:17:00Z", "username": "admin", "owner_instance": "a",
            "service": False, "status_counts": dict(Counter(statuses)), "jobs": [_job(s) for s in statuses]}


def test_abort_is_offered_only_while_something_still_runs() -> None:
    assert workflow_row(_workflow("finished", "failed"))["abortable"] is False
    assert workflow_row(_workflow("finished", "running"))["abortable"] is True
    assert workflow_row(_workflow("queued"))["abortable"] is True
    assert [j["abortable"] for j in workflow_row(_workflow("finished", "running", "aborted"))["jobs"]] == [False, True, False]


def test_rows_show_readable_local_times_with_utc_for_the_tooltip() -> None:
    row = workflow_row(_workflow("finished"), zone=BERLIN)
    assert row["created"] == "2 Dec 2026, 11:16" and row["created_utc"] == "2026-12-02 10:16:05 UTC"
    assert row["created_ago"].endswith("ago")
    job = job_row(_job("finished"), BERLIN)
    assert job["created"] == "2 Dec 2026, 11:16" and job["updated_utc"] == "2026-12-02 10:17:00 UTC"
    assert "123456" not in str(row) and "T10:16" not in str(row)  # no raw ISO anywhere in what the table shows
    assert job["conf_text"].startswith("{\n")  # folded behind a button, so it may be laid out for reading


# --- dashboard ------------------------------------------------------------------------------------

def test_bars_carry_their_counts_and_a_single_bar_has_room_to_be_drawn() -> None:
    figure = _figure("Modality", {"OT": 1})
    (bar,) = figure["data"]
    assert bar["text"] == ["1"] and bar["x"] == [1]
    assert figure["layout"]["height"] >= 80  # one bar in a 34-px plot was the empty-looking chart
    assert figure["layout"]["xaxis"]["range"][1] > 1
    many = _figure("Modality", {"CT": 1200, "MR": 3})
    assert many["data"][0]["text"] == ["3", "1,200"]
    dates = _figure("StudyDate", {"2026-01": 4, "other": 1})
    assert dates["data"][0]["text"] == ["4"]


# --- filter value counts --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def search(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SeriesSearch, list[Any]]]:
    db = Database(f"sqlite:///{tmp_path_factory.mktemp('people-text') / 'vireo.db'}")
    db.migrate()
    items = list(generate(80, seed=5))
    load(db, items)
    yield SeriesSearch(db), items
    db.dispose()


def test_filter_value_counts_follow_the_current_search(search: tuple[SeriesSearch, list[Any]]) -> None:
    service, items = search
    everywhere = {v["value"]: v["count"] for v in values_matching(service, "Modality", "", None, "", [])}
    assert everywhere == dict(Counter(i.modality for i in items))
    patient = items[0].patient_id
    of_patient = {v["value"]: v["count"] for v in values_matching(service, "Modality", "", None, f"PatientID:{patient}", [])}
    assert of_patient == dict(Counter(i.modality for i in items if i.patient_id == patient))
    assert sum(of_patient.values()) < sum(everywhere.values())
    # another field's filter narrows the counts; the field's own filter does not (its other values stay on offer)
    modality = items[0].modality
    narrowed = {v["value"]: v["count"] for v in values_matching(service, "PatientID", "", None, "", [f"Modality:{modality}"])}
    assert narrowed == dict(Counter(i.patient_id for i in items if i.modality == modality))
    own = {v["value"]: v["count"] for v in values_matching(service, "Modality", "", None, "", [f"Modality:{modality}"])}
    assert own == everywhere
    # a query that does not parse counts as none, rather than failing the picker
    assert {v["value"]: v["count"] for v in values_matching(service, "Modality", "", None, "Modality:(", [])} == everywhere
