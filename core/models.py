"""The index tables: patients, studies, series, instances, datasets, tags and users.

The database is an index of the files under `pacs/` (they can always be re-read), plus the
things only the database knows: datasets, tags, users and tokens. Every series-level
query the UI and API make is answered from `series` (with its study and patient) without
touching `instance`, which only the ingest path and thumbnails read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from sqlalchemy import JSON, Column, ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint, event
from sqlmodel import Field, SQLModel

from core.person_names import folded_names
from core.timeutil import UTCDateTime, utcnow

UID = 64  # the longest UID DICOM allows


def _utc_column(nullable: bool = False, index: bool = False) -> Any:
    return Field(default_factory=utcnow if not nullable else None, sa_type=UTCDateTime, nullable=nullable, index=index)


def _row_names(values: dict[str, Any]) -> dict[str, str]:
    """A row's person names, folded (core.person_names): from its attributes, and a patient's name column."""
    attributes = dict(values.get("attributes") or {})
    if values.get("patient_name"):
        attributes["PatientName"] = values["patient_name"]
    return folded_names(attributes)


def _names_column() -> Any:
    """Every PN attribute of the row folded, written with the row (matching never folds at query time, see
    core.person_names); rows inserted without it (bulk loaders) get it from their own attributes."""
    return Field(default_factory=dict, sa_column=Column(
        JSON, nullable=False, server_default="{}", default=lambda context: _row_names(context.get_current_parameters())
    ))


class Patient(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    patient_id: str = Field(max_length=128, unique=True, description="PatientID as sent ('' when absent)")
    patient_name: str = Field(default="", max_length=256)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    names_folded: dict[str, str] = _names_column()
    created: datetime = _utc_column()


class Study(SQLModel, table=True):
    study_uid: str = Field(primary_key=True, max_length=UID)
    patient_pk: int = Field(sa_column=Column(ForeignKey("patient.id", ondelete="CASCADE"), nullable=False, index=True))
    study_date: str = Field(default="", max_length=16, index=True)
    study_description: str = Field(default="", max_length=256)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    names_folded: dict[str, str] = _names_column()
    created: datetime = _utc_column()


class Series(SQLModel, table=True):
    # QIDO-RS and C-FIND page through series in study order and match descriptions by prefix (see core/dicom_query.py).
    __table_args__ = (
        Index("ix_series_study_order", "study_uid", "series_number", "series_uid"),
        Index("ix_series_series_description", "series_description", "study_uid", "series_number", "series_uid"),
        Index("ix_series_modality_order", "modality", "study_uid", "series_number", "series_uid"),
    )
    series_uid: str = Field(primary_key=True, max_length=UID)
    study_uid: str = Field(sa_column=Column(String(UID), ForeignKey("study.study_uid", ondelete="CASCADE"), nullable=False, index=True))
    modality: str = Field(default="", max_length=16, index=True)
    series_description: str = Field(default="", max_length=256)
    series_number: Optional[int] = None
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    names_folded: dict[str, str] = _names_column()
    arrived: datetime = _utc_column(index=True)
    updated: datetime = _utc_column(index=True)
    instance_count: int = 0
    size_bytes: int = 0
    min_instance_number: Optional[int] = None
    max_instance_number: Optional[int] = None
    missing_instance_numbers: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    is_complete: bool = True
    referenced_series_uid: Optional[str] = Field(default=None, max_length=UID, index=True, description="the image series a SEG/RTSTRUCT annotates")
    thumbnail_at: Optional[datetime] = Field(default=None, sa_type=UTCDateTime, nullable=True)


class Instance(SQLModel, table=True):
    sop_instance_uid: str = Field(primary_key=True, max_length=UID)
    series_uid: str = Field(sa_column=Column(String(UID), ForeignKey("series.series_uid", ondelete="CASCADE"), nullable=False, index=True))
    sop_class_uid: str = Field(max_length=UID)
    transfer_syntax_uid: str = Field(max_length=UID)
    instance_number: Optional[int] = None
    slice_position: Optional[float] = Field(default=None, description="position along the slice normal, for ordering")
    number_of_frames: int = 1
    path: str = Field(max_length=512, description="relative to the PACS root")
    size_bytes: int = 0
    calling_aet: str = Field(default="", max_length=16)
    called_aet: str = Field(default="", max_length=16)
    peer_address: str = Field(default="", max_length=64)
    received: datetime = _utc_column()


@event.listens_for(Patient, "before_insert")
@event.listens_for(Study, "before_insert")
@event.listens_for(Series, "before_insert")
def _fold_names_of(_mapper: Any, _connection: Any, row: Any) -> None:
    """Rows added through the ORM get their folded names too."""
    if not row.names_folded:
        row.names_folded = _row_names({"attributes": row.attributes, "patient_name": getattr(row, "patient_name", "")})


class Dataset(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, unique=True)
    username: str = Field(default="", max_length=128)
    created: datetime = _utc_column()
    updated: datetime = _utc_column()


class DatasetSeries(SQLModel, table=True):
    __tablename__ = "dataset_series"
    dataset_id: int = Field(sa_column=Column(ForeignKey("dataset.id", ondelete="CASCADE"), primary_key=True))
    series_uid: str = Field(sa_column=Column(String(UID), ForeignKey("series.series_uid", ondelete="CASCADE"), primary_key=True, index=True))
    added: datetime = _utc_column()


class SeriesTag(SQLModel, table=True):
    """One row per (series, tag): adding and removing are single-row statements, never read-modify-write."""

    __tablename__ = "series_tag"
    series_uid: str = Field(sa_column=Column(String(UID), ForeignKey("series.series_uid", ondelete="CASCADE"), primary_key=True))
    tag: str = Field(sa_column=Column(String(128), primary_key=True, index=True))
    added: datetime = _utc_column()


class User(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    username: str = Field(max_length=128, unique=True)
    password_hash: str = Field(max_length=256)
    is_admin: bool = False
    disabled: bool = False
    created: datetime = _utc_column()
    last_login: Optional[datetime] = Field(default=None, sa_type=UTCDateTime, nullable=True)


class ApiToken(SQLModel, table=True):
    """A bearer token; only its SHA-256 is stored, the token itself is shown once."""

    __tablename__ = "api_token"
    id: Optional[int] = Field(default=None, primary_key=True)
    user_id: int = Field(sa_column=Column(ForeignKey("user.id", ondelete="CASCADE"), nullable=False, index=True))
    name: str = Field(max_length=128)
    token_hash: str = Field(max_length=64, unique=True)
    prefix: str = Field(max_length=16, description="first characters, to recognise a token in a list")
    created: datetime = _utc_column()
    last_used: Optional[datetime] = Field(default=None, sa_type=UTCDateTime, nullable=True)
    revoked: Optional[datetime] = Field(default=None, sa_type=UTCDateTime, nullable=True)




class InstanceDocument(SQLModel, table=True):
    """An instance's DICOM JSON (PS3.18 F.2) without bulk data, written at ingest.

    WADO-RS metadata is answered by joining these documents, never by reading files:
    viewers ask for a series' metadata before they show anything. Bulk data elements carry
    a BulkDataURI relative to the DICOMweb root, marked with `BULK_BASE` where the
    request's base URL goes.
    """

    __tablename__ = "instance_document"
    sop_instance_uid: str = Field(sa_column=Column(String(UID), ForeignKey("instance.sop_instance_uid", ondelete="CASCADE"), primary_key=True))
    series_uid: str = Field(sa_column=Column(String(UID), nullable=False, index=True))
    document: str = Field(sa_column=Column(Text, nullable=False))


# --- The search index (core/search): derived from the tables above, rebuilt by `reindex`. ---


class SearchField(SQLModel, table=True):
    """A field name the index has seen; its small id qualifies the field's words in the text index."""

    __tablename__ = "search_field"
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(max_length=128, unique=True)


class SearchValue(SQLModel, table=True):
    """The value dictionary: every distinct (field, value) with the number of series holding it."""

    __tablename__ = "search_value"
    __table_args__ = (UniqueConstraint("field_id", "display"), Index("ix_search_value_field_norm", "field_id", "norm"), Index("ix_search_value_norm", "norm"))
    id: Optional[int] = Field(default=None, primary_key=True)
    field_id: int
    display: str = Field(max_length=256)
    norm: str = Field(max_length=256, description="folded: what matching and prefix completion compare")
    count: int = 0


class SearchDocument(SQLModel, table=True):
    """One row per series: the dictionary ids of its values (the in-memory columns are built from these)."""

    __tablename__ = "search_document"
    id: Optional[int] = Field(default=None, primary_key=True)
    series_uid: str = Field(max_length=UID, unique=True)
    study_uid: str = Field(max_length=UID)
    patient_pk: int
    value_ids: bytes = Field(default=b"", sa_column=Column(LargeBinary, nullable=False))


class SearchChange(SQLModel, table=True):
    """Series whose search data changed, in commit order: the in-memory columns catch up from here."""

    __tablename__ = "search_change"
    seq: Optional[int] = Field(default=None, primary_key=True)
    doc_id: int


class UserSetting(SQLModel, table=True):
    """One per-user UI setting (JSON), kept on the server so it follows the user to any browser."""

    __tablename__ = "user_setting"
    __table_args__ = (UniqueConstraint("username", "key"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    username: str = Field(max_length=128, index=True)
    key: str = Field(max_length=64)
    value: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    updated: datetime = _utc_column()
