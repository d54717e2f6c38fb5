"""federation: when a remote's last sync failed (its health shows the time next to the plain-words reason)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('federation_instance', schema=None) as batch_op:
        batch_op.add_column(sa.Column('last_failure', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('federation_instance', schema=None) as batch_op:
        batch_op.drop_column('last_failure')
