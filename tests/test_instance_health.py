"""Issue 15 item 7: instance health from the last sync attempts, reasons in plain words, the local name until the first remote.

The page logic runs in-process through NiceGUI's `user` fixture; the reasons are checked on the
texts the endpoints really send (tests/test_remote_job_details.py checks a wrong Fernet key
between two real processes).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nicegui.testing import User

from federation.failures import could_not_reach, refused_request
from federation.instances import health
from federation.models import FederationInstance
from tests.support.vireo import ADMIN_PASSWORD, free_port
from tests.support.workflows import dags_folder
from tests.test_pages import log_in
from tests.test_workflow_pages import element, until

NOW = datetime(2026, 12, 2, 11, 16, tzinfo=UTC)


@pytest.fixture(autouse=True)
def vireo_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("VIREO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("VIREO_DAGS_DIR", str(dags_folder(tmp_path / "dags")))
    monkeypatch.setenv("VIREO_DICOM_PORT", str(free_port()))
    monkeypatch.setenv("VIREO_ADMIN_PASSWORD", ADMIN_PASSWORD)
    monkeypatch.setenv("VIREO_INSTANCE_NAME", "site-a")
    yield


def _remote(**fields: object) -> FederationInstance:
    base: dict[str, object] = {"name": "site-b", "host": "127.0.0.1", "port": 1, "token": str(uuid.uuid4())}
    return FederationInstance(**{**base, **fields})


def test_health_follows_the_last_sync_attempts() -> None:
    assert health(_remote()) == "never synced"
    assert health(_remote(last_success=NOW, last_seen=NOW)) == "online"
    # it answered, but refused us (or we its answer): failing from the first time, whether it was ever synced or not
    assert health(_remote(missed_syncs=1, failure_kind="refused")) == "failing"
    assert health(_remote(missed_syncs=5, failure_kind="refused", last_success=NOW)) == "failing"
    # no answer: one or two misses after a success are "failing", more (or never once reached) "unreachable"
    assert health(_remote(missed_syncs=1, failure_kind="unreachable", last_success=NOW)) == "failing"
    assert health(_remote(missed_syncs=3, failure_kind="unreachable", last_success=NOW)) == "unreachable"
    assert health(_remote(missed_syncs=1, failure_kind="unreachable")) == "unreachable"


@pytest.mark.parametrize(("detail", "plain"), [
    ("cannot decrypt the body: wrong Fernet key, a changed body or older than its TTL", "the Fernet key does not match"),
    ("plaintext refused: this instance requires Fernet-encrypted bodies", "it requires Fernet encryption"),
    ("the token proof does not match site-b's token (regenerated? register site-b's definition again)", "our copy of its token is out of date"),
    ("instance 'site-a' is not registered here", "it does not know this instance"),
    ("the request is not signed with the public key registered here for 'site-a'", "another public key registered for this instance"),
    ("timestamp 400 s off (more than 300 s)", "clocks differ"),
])
def test_refusals_read_as_what_to_fix(detail: str, plain: str) -> None:
    words = refused_request("site-b", 400, detail)
    assert words.startswith("site-b refused our request: ") and plain in words and "HTTP" not in words


def test_an_unknown_refusal_is_passed_on_and_failures_below_http_read_the_same() -> None:
    assert refused_request("site-b", 418, "something new") == "site-b refused our request (HTTP 418): something new"
    assert could_not_reach("site-b") == "could not reach site-b (the server log has the details)"


async def test_the_local_name_changes_until_the_first_remote_is_registered(user: User, tmp_path: Path) -> None:
    from app import federation_actions, workflow_actions
    from federation.instances import InstanceError
    from federation.sync import NAME_FILE

    await log_in(user)
    await user.should_see(marker="user-menu", retries=100)
    await user.open("/instances")
    await user.should_see(marker="local-rename", retries=50)
    await user.should_see("it can change until the first remote is registered")
    element(user, "local-rename").value = "sync"
    user.find(marker="rename-local").click()
    await until(lambda: "reserved" in element(user, "local-message").text)
    element(user, "local-rename").value = "site-renamed"
    user.find(marker="rename-local").click()
    await until(lambda: federation_actions.local_instance()["name"] == "site-renamed")
    await user.should_see("This instance is now called site-renamed")
    assert workflow_actions.instance_name() == "site-renamed"  # new jobs are owned by the new name
    assert (tmp_path / "data" / NAME_FILE).read_text().strip() == "site-renamed"  # and a restart keeps it

    federation_actions.add_remote({"name": "site-b", "protocol": "http", "host": "127.0.0.1", "port": free_port(),
                                   "token": str(uuid.uuid4()), "fernet_key": None, "ssl_verify": True})
    await user.open("/instances")  # (an open page sees the lock within 5 s, on its own)
    await user.should_see("the name is locked because remote instances are registered (site-b)", retries=50)
    assert not element(user, "rename-local").enabled and not element(user, "local-rename").enabled
    with pytest.raises(InstanceError, match="locked"):
        federation_actions.change_local({"name": "site-other"})
    assert federation_actions.local_instance()["name_locked"]
