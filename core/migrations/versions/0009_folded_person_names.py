"""dicomweb: person names folded once, at index time (`names_folded` on patient, study and series)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

QIDO-RS and C-FIND compared `lower(PatientName)` with a query lower-cased in Python; SQLite's
lower() folds ASCII only, so `ÄNEAS^RÜDIGER` never found `Äneas^Rüdiger`. Every row now keeps
its PN attributes folded by core.person_names (and, for names of several component groups,
every group), filled here for the rows already indexed. The study index on lower(PatientName)
becomes one on the folded name (and a partial one on its groups), with study_uid, as in 0007.
"""
from __future__ import annotations

import json
from typing import Any

from alembic import op
import sqlalchemy as sa

from core.person_names import folded_names, groups_key

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

BATCH = 1000
TABLES = {"patient": "id", "study": "study_uid", "series": "series_uid"}
NAME_INDEXES = {
    "ix_study_patient_name": ("study", "PatientName", True),
    "ix_study_patient_name_groups": ("study", groups_key("PatientName"), True),
    "ix_patient_name": ("patient", "PatientName", False),
    "ix_patient_name_groups": ("patient", groups_key("PatientName"), False),
}


def _expression(key: str) -> str:
    """The folded name's SQL, exactly as core.dicom_query writes it (SQLite matches index expressions by their text)."""
    if op.get_bind().dialect.name == "postgresql":
        return f"(names_folded->>'{key}') COLLATE \"C\""
    return f"json_extract(names_folded, '$.\"{key}\"')"


def _parsed(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return json.loads(value) if value else {}
    return dict(value or {})


def _fill(table: str, key: str) -> None:
    """Fold the names of every row already indexed, a batch at a time (keyset order, so memory stays flat)."""
    bind = op.get_bind()
    extra = ", patient_name" if table == "patient" else ""
    target = sa.table(table, sa.column(key), sa.column("names_folded", sa.JSON))
    update = target.update().where(target.c[key] == sa.bindparam("row_key")).values(names_folded=sa.bindparam("names"))
    last: Any = None
    while True:
        after = "" if last is None else f"WHERE {key} > :last "
        rows = bind.execute(sa.text(f"SELECT {key}, attributes{extra} FROM {table} {after}ORDER BY {key} LIMIT {BATCH}"),
                            {} if last is None else {"last": last}).fetchall()
        if not rows:
            return
        changes = []
        for row in rows:
            attributes = _parsed(row[1])
            if table == "patient" and row[2]:
                attributes["PatientName"] = row[2]
            names = folded_names(attributes)
            if names:
                changes.append({"row_key": row[0], "names": names})
        if changes:
            bind.execute(update, changes)
        last = rows[-1][0]


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("names_folded", sa.JSON(), nullable=False, server_default="{}"))
    for table, key in TABLES.items():
        _fill(table, key)
    op.execute("DROP INDEX ix_study_patient_name")
    for name, (table, key, with_study_uid) in NAME_INDEXES.items():
        # names of several groups are few where names are Latin: a partial index, so planners see how few
        partial = f" WHERE {_expression(key)} IS NOT NULL" if key != "PatientName" else ""
        op.execute(f"CREATE INDEX {name} ON {table} ({_expression(key)}{', study_uid' if with_study_uid else ''}){partial}")


def downgrade() -> None:
    for name in NAME_INDEXES:
        op.execute(f"DROP INDEX {name}")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE INDEX ix_study_patient_name ON study (lower(attributes->>'PatientName'), study_uid)")
    else:
        op.execute("CREATE INDEX ix_study_patient_name ON study (lower(json_extract(attributes, '$.PatientName')), study_uid)")
    for table in TABLES:
        op.drop_column(table, "names_folded")
