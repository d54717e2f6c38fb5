"""dicomweb: precomputed instance metadata (DICOM JSON) for WADO-RS; series indexes for QIDO-RS paging

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

Instances indexed before this revision get their document the first time a client asks
for their metadata (read from the file once, then kept).
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('instance_document',
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('series_uid', sa.String(length=64), nullable=False),
    sa.Column('document', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['sop_instance_uid'], ['instance.sop_instance_uid'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sop_instance_uid')
    )
    with op.batch_alter_table('instance_document', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_instance_document_series_uid'), ['series_uid'], unique=False)
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.create_index('ix_series_study_order', ['study_uid', 'series_number', 'series_uid'], unique=False)
        # Covering (series order included): a match on these walks the index alone, already in QIDO's order.
        batch_op.create_index('ix_series_series_description', ['series_description', 'study_uid', 'series_number', 'series_uid'], unique=False)
        batch_op.create_index('ix_series_modality_order', ['modality', 'study_uid', 'series_number', 'series_uid'], unique=False)
    # Person names match case-insensitively, accession numbers exactly: both are what study lists search by.
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("CREATE INDEX ix_study_patient_name ON study (lower(attributes->>'PatientName'))")
        op.execute("CREATE INDEX ix_study_accession_number ON study ((attributes->>'AccessionNumber'))")
    else:
        op.execute("CREATE INDEX ix_study_patient_name ON study (lower(json_extract(attributes, '$.PatientName')))")
        op.execute("CREATE INDEX ix_study_accession_number ON study (json_extract(attributes, '$.AccessionNumber'))")


def downgrade() -> None:
    op.execute("DROP INDEX ix_study_accession_number")
    op.execute("DROP INDEX ix_study_patient_name")
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.drop_index('ix_series_modality_order')
        batch_op.drop_index('ix_series_series_description')
        batch_op.drop_index('ix_series_study_order')
    with op.batch_alter_table('instance_document', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instance_document_series_uid'))
    op.drop_table('instance_document')
