"""a workflow's selection (picked series, or dataset + query + filters) and the series it resolved to

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('workflow', schema=None) as batch_op:
        batch_op.add_column(sa.Column('selection', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('series', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('workflow', schema=None) as batch_op:
        batch_op.drop_column('series')
        batch_op.drop_column('selection')
