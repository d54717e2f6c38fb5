"""dicomweb: precomputed instance metadata (DICOM JSON) for WADO-RS

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28

Instances indexed before this revision get their document the first time a client asks
for their metadata (read from the file once, then kept).
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
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


def downgrade() -> None:
    with op.batch_alter_table('instance_document', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instance_document_series_uid'))
    op.drop_table('instance_document')
