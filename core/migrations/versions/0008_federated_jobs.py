"""federated orchestration: a job's role, its parent (orchestrator) job and round, and its result

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('role', sa.String(length=16), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('parent_job_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('round', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('result', sa.JSON(), nullable=True))
        batch_op.create_index('ix_job_parent_job_id', ['parent_job_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_index('ix_job_parent_job_id')
        batch_op.drop_column('result')
        batch_op.drop_column('round')
        batch_op.drop_column('parent_job_id')
        batch_op.drop_column('role')
