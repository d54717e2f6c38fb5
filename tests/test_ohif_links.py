"""'Open in OHIF' in a job's details: each input series, with the SEGs made from it drawn over it.

In-process Vireo through NiceGUI's simulated `user`; a phantom CT and a SEG over it arrive
through the real DICOM receiver (dcmsend), a test DAG runs on the CT.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nicegui.testing import User

from app import viewers
from app.ohif import location
from tests.support.ohif_data import send, write_ct_with_seg
from tests.support.vireo import ADMIN_PASSWORD, free_port
from tests.support.workflows import dags_folder
from tests.test_pages import log_in


@pytest.fixture(autouse=True)
def vireo_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("VIREO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VIREO_DAGS_DIR", str(dags_folder(tmp_path / "dags")))
    monkeypatch.setenv("VIREO_DICOM_PORT", str(free_port()))
    monkeypatch.setenv("VIREO_ADMIN_PASSWORD", ADMIN_PASSWORD)
    yield


async def test_job_details_open_the_jobs_series_in_ohif_with_its_seg(user: User, tmp_path: Path) -> None:
    from app import workflow_actions

    assert location.installed() is not None, location.INSTALL_HINT
    await log_in(user)
    await user.should_see(marker="user-menu", retries=100)
    data = write_ct_with_seg(tmp_path / "ct", slices=16, size=64)
    await asyncio.to_thread(send, data.files, int(os.environ["VIREO_DICOM_PORT"]))
    expected = viewers.own_ohif_url(data.study_uid, data.ct_uid, seg_series_uids=[data.seg_uid])
    links: list[dict[str, Any]] = []
    for _ in range(400):  # the index catches up with the receiver
        links = await asyncio.to_thread(viewers.job_result_links, [data.ct_uid, "1.2.404"])
        if links and links[0]["url"] == expected:
            break
        await asyncio.sleep(0.05)
    assert [link["url"] for link in links] == [expected]  # an unknown series has no link
    assert links[0]["label"] == "CT · CT torso 16 slices with 1 segmentation"

    started = workflow_actions.create(dag_id="test-echo-series", name="echo", series=[data.ct_uid], username="admin")
    await user.open("/workflows")
    await user.should_see(marker="workflow-table", retries=100)
    user.find(marker="workflow-table").trigger("job_details", started["jobs"][0]["id"])
    await user.should_see(marker="job-ohif-links", retries=100)
    (link,) = user.find(marker="job-open-ohif").elements
    assert link.props["href"] == expected and link.props["target"] == "_blank"
