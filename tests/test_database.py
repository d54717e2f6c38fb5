"""The index, datasets and accounts on both backends: SQLite (default) and a real PostgreSQL server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select

from core import accounts, catalog, datasets
from core.db import Database
from core.models import Instance, Series, SeriesTag
from core.pacs_store import PacsStore
from core.search.service import Selection, SeriesSearch
from ingest.indexer import IndexWriter
from ingest.reindex import read_instance
from tests.factories import write_series


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'vireo.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    database = Database(url)
    database.migrate()
    yield database
    database.dispose()


def _index(db: Database, store: PacsStore, paths: list[Path], dataset: str | None = None) -> IndexWriter:
    writer = IndexWriter(db)
    items = []
    for path in paths:
        stored = store.store(*_uids(path), path.read_bytes())
        item = read_instance(store, store.path(stored.relative_path))
        item.dataset = dataset
        items.append(item)
    writer.write(items)
    return writer


def _uids(path: Path) -> tuple[str, str, str]:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def test_schema_is_migrated_and_sqlite_uses_wal(db: Database) -> None:
    tables = set(inspect(db.engine).get_table_names())
    assert {"patient", "study", "series", "instance", "dataset", "dataset_series", "series_tag", "user", "api_token", "alembic_version"} <= tables
    db.migrate()  # idempotent
    if db.is_sqlite:
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_index_series_documents_and_completeness(db: Database, tmp_path: Path) -> None:
    store = PacsStore(tmp_path / "pacs")
    ct = write_series(tmp_path / "in", modality="CT", slices=8, rows=32, columns=32, patient_id="P1", seed=1)
    mr = write_series(tmp_path / "in", modality="MR", slices=4, rows=32, columns=32, patient_id="P2", seed=2)
    # a gap: instance 5 of the CT does not arrive
    _index(db, store, [p for i, p in enumerate(ct.paths) if i != 4] + mr.paths, dataset="first")
    search = SeriesSearch(db)
    page = search.page(Selection(), sort="Modality")
    assert page.total == 2
    with db.session() as session:
        assert [i["Modality"] for i in catalog.documents_for(session, page.series_uids)] == ["CT", "MR"]
        doc = catalog.get_series(session, ct.series_uid)
    assert doc["PatientID"] == "P1" and doc["instances"] == 7 and doc["datasets"] == ["first"]
    assert doc["missing_instance_numbers"] == [5] and doc["is_complete"] is False
    assert doc["Manufacturer"] == "Vireo Synthetic" and "SliceThickness" in doc
    # the missing instance arrives, the others again: nothing is stored or counted twice
    _index(db, store, ct.paths, dataset="second")
    with db.session() as session:
        doc = catalog.get_series(session, ct.series_uid)
        assert doc["instances"] == 8 and doc["is_complete"] and doc["datasets"] == ["first", "second"]
        assert session.execute(select(func.count()).select_from(Instance)).scalar_one() == 12
    with pytest.raises(LookupError):
        search.page(Selection(dataset="nope"))
    with pytest.raises(ValueError):
        search.page(Selection(), sort="NotAField")
    assert search.page(Selection(), sort="-PatientID", limit=1).series_uids == [mr.series_uid]
    assert search.page(Selection(dataset="first"), offset=1, limit=5).total == 2


def test_concurrent_batches_share_patients_and_studies(db: Database, tmp_path: Path) -> None:
    """Two writers (as the receiver's one plus a reindex) upserting the same study do not collide."""
    store = PacsStore(tmp_path / "pacs")
    a = write_series(tmp_path / "in", modality="CT", slices=6, rows=16, columns=16, patient_id="SAME", seed=7, series_number=1)
    b = write_series(tmp_path / "in", modality="CT", slices=6, rows=16, columns=16, patient_id="SAME", seed=7, series_number=2)
    errors: list[BaseException] = []

    def run(paths: list[Path]) -> None:
        try:
            _index(db, store, paths)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s.paths,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with db.session() as session:
        assert session.execute(select(func.count()).select_from(Series)).scalar_one() == 2


def test_datasets_never_delete_series(db: Database, tmp_path: Path) -> None:
    store = PacsStore(tmp_path / "pacs")
    s = write_series(tmp_path / "in", modality="CT", slices=2, rows=16, columns=16, patient_id="D", seed=3)
    _index(db, store, s.paths)
    with db.session() as session:
        datasets.create_dataset(session, "cohort", [s.series_uid], "admin")
    with db.session() as session:
        with pytest.raises(datasets.DatasetExists):
            datasets.create_dataset(session, "cohort", [])
    with db.session() as session:
        with pytest.raises(datasets.DatasetError, match="unknown series"):
            datasets.create_dataset(session, "other", ["1.2.3"])
        with pytest.raises(datasets.DatasetError):
            datasets.create_dataset(session, "bad/name", [])
    with db.session() as session:
        assert datasets.list_datasets(session)[0]["series"] == 1
        datasets.change_members(session, "cohort", add=[], remove=[s.series_uid])
    with db.session() as session:
        assert datasets.list_datasets(session)[0]["series"] == 0
        datasets.change_members(session, "cohort", add=[s.series_uid, s.series_uid], remove=[])
    with db.session() as session:
        datasets.delete_dataset(session, "cohort")
    with db.session() as session:
        assert datasets.list_datasets(session) == []
        assert catalog.get_series(session, s.series_uid)["instances"] == 2


def test_tags_cascade_with_series(db: Database, tmp_path: Path) -> None:
    store = PacsStore(tmp_path / "pacs")
    s = write_series(tmp_path / "in", modality="CT", slices=1, rows=16, columns=16, patient_id="T", seed=4)
    _index(db, store, s.paths)
    with db.session() as session:
        session.add(SeriesTag(series_uid=s.series_uid, tag="lung"))
    with db.session() as session:
        assert catalog.get_series(session, s.series_uid)["tags"] == ["lung"]
        session.delete(session.get(Series, s.series_uid))
    with db.session() as session:
        assert session.execute(select(func.count()).select_from(SeriesTag)).scalar_one() == 0


def test_accounts_and_tokens(db: Database) -> None:
    with db.session() as session:
        generated = accounts.ensure_admin(session, "")
        assert generated and len(generated) >= 12
    with db.session() as session:
        assert accounts.ensure_admin(session, "other") is None  # only on first start
        assert accounts.authenticate(session, "admin", generated) is not None
        assert accounts.authenticate(session, "admin", "wrong-password") is None
        assert accounts.authenticate(session, "nobody", generated) is None
        alice = accounts.create_user(session, "alice", "alice-password")
        with pytest.raises(accounts.AccountError):
            accounts.create_user(session, "alice", "alice-password")
        with pytest.raises(accounts.AccountError):
            accounts.create_user(session, "bob", "short")
        assert alice.password_hash.startswith("$argon2")
    with db.session() as session:
        alice = accounts.find_user(session, "alice")
        row, token = accounts.create_token(session, alice.id, "script")
        assert token.startswith("vireo_") and row.token_hash != token
    with db.session() as session:
        assert accounts.user_for_token(session, token).username == "alice"
        admin = accounts.principal(accounts.find_user(session, "admin"))
        accounts.set_disabled(session, admin, "alice", True)
    with db.session() as session:
        assert accounts.user_for_token(session, token) is None
        assert accounts.authenticate(session, "alice", "alice-password") is None
        with pytest.raises(accounts.AccountError):
            accounts.remove_user(session, admin, "admin")
        accounts.set_disabled(session, admin, "alice", False)
        accounts.revoke_token(session, alice.id, row.id)
    with db.session() as session:
        assert accounts.user_for_token(session, token) is None
        accounts.remove_user(session, admin, "alice")
    with db.session() as session:
        assert [u.username for u in accounts.list_users(session)] == ["admin"]


def test_completeness_when_instances_arrive_one_by_one_out_of_order(db: Database, tmp_path: Path) -> None:
    store = PacsStore(tmp_path / "pacs")
    s = write_series(tmp_path / "in", modality="CT", slices=6, rows=16, columns=16, patient_id="OOO", seed=8)
    writer = IndexWriter(db)
    order = [5, 0, 3, 1, 4, 2]  # instance numbers 6, 1, 4, 2, 5, 3
    expected_missing = [[], [2, 3, 4, 5], [2, 3, 5], [3, 5], [3], []]
    for step, index in enumerate(order):
        path = s.paths[index]
        stored = store.store(*_uids(path), path.read_bytes())
        writer.write([read_instance(store, store.path(stored.relative_path))])
        with db.session() as session:
            doc = catalog.get_series(session, s.series_uid)
        assert doc["missing_instance_numbers"] == expected_missing[step], step
        assert doc["instances"] == step + 1 and doc["is_complete"] == (not expected_missing[step])
    # a second writer (as a reindex) changes the series behind the first one's cache: counts stay exact
    other = IndexWriter(db)
    other.write([read_instance(store, store.path(store.relative_path(*_uids(s.paths[0]))))])
    writer.write([read_instance(store, store.path(store.relative_path(*_uids(s.paths[1]))))])
    with db.session() as session:
        doc = catalog.get_series(session, s.series_uid)
    assert doc["instances"] == 6 and doc["is_complete"] and doc["min_instance_number"] == 1 and doc["max_instance_number"] == 6


def test_hostile_values_are_clamped_not_fatal(db: Database, tmp_path: Path) -> None:
    """Values SQLite would take but PostgreSQL refuses (long IDs, NUL, huge numbers) never stop indexing."""
    import pydicom

    store = PacsStore(tmp_path / "pacs")
    s = write_series(tmp_path / "in", modality="CT", slices=2, rows=16, columns=16, patient_id="H", seed=10)
    odd = pydicom.dcmread(s.paths[1])
    odd.PatientID = "P" * 200
    odd.SeriesDescription = "bad\x00name"
    odd.InstanceNumber = 2**31 + 5
    odd.save_as(s.paths[1])
    writer = IndexWriter(db)
    items = []
    for path in s.paths:
        stored = store.store(*_uids(path), path.read_bytes())
        items.append(read_instance(store, store.path(stored.relative_path)))
    writer.write(items)
    with db.session() as session:
        assert catalog.get_series(session, s.series_uid)["instances"] == 2


def test_missing_numbers_never_build_the_whole_range() -> None:
    from ingest.indexer import MAX_MISSING, missing_numbers

    assert missing_numbers(set()) == []
    assert missing_numbers({1, 2, 3}) == []
    assert missing_numbers({1, 4, 6}) == [2, 3, 5]
    huge = missing_numbers({1, 2**31 - 1})
    assert len(huge) == MAX_MISSING and huge[:3] == [2, 3, 4]
