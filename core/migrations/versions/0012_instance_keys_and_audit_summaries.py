"""federation: each instance's Ed25519 public key, why a remote's last sync failed, audit rows that summarise

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""
import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('federation_instance', schema=None) as batch_op:
        batch_op.add_column(sa.Column('public_key', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('failure_kind', sa.String(length=16), nullable=False, server_default=''))
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.add_column(sa.Column('verified', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('source', sa.String(length=64), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('count', sa.Integer(), nullable=False, server_default='1'))


def downgrade() -> None:
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.drop_column('count')
        batch_op.drop_column('source')
        batch_op.drop_column('verified')
    with op.batch_alter_table('federation_instance', schema=None) as batch_op:
        batch_op.drop_column('failure_kind')
        batch_op.drop_column('public_key')
