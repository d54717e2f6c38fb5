"""federation: instances, seen nonces, audit log

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('federation_instance',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('remote', sa.Boolean(), nullable=False),
    sa.Column('protocol', sa.String(length=8), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('port', sa.Integer(), nullable=False),
    sa.Column('token', sa.String(length=36), nullable=False),
    sa.Column('fernet_key', sa.String(length=44), nullable=True),
    sa.Column('ssl_verify', sa.Boolean(), nullable=False),
    sa.Column('ca_bundle', sa.Text(), nullable=True),
    sa.Column('automatic_sync', sa.Boolean(), nullable=False),
    sa.Column('sync_interval', sa.Integer(), nullable=False),
    sa.Column('automatic_execution', sa.Boolean(), nullable=False),
    sa.Column('fernet_encryption', sa.Boolean(), nullable=False),
    sa.Column('allowed_dags', sa.JSON(), nullable=False),
    sa.Column('allowed_datasets', sa.JSON(), nullable=False),
    sa.Column('last_seen', sa.DateTime(), nullable=True),
    sa.Column('last_success', sa.DateTime(), nullable=True),
    sa.Column('last_error', sa.String(length=2000), nullable=False),
    sa.Column('missed_syncs', sa.Integer(), nullable=False),
    sa.Column('created', sa.DateTime(), nullable=False),
    sa.Column('updated', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name'),
    )
    op.create_table('federation_nonce',
    sa.Column('nonce', sa.String(length=64), nullable=False),
    sa.Column('seen', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('nonce'),
    )
    op.create_index('ix_federation_nonce_seen', 'federation_nonce', ['seen'], unique=False)
    op.create_table('audit_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('time', sa.DateTime(), nullable=False),
    sa.Column('peer', sa.String(length=128), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('detail', sa.String(length=2000), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_audit_event_time', 'audit_event', ['time'], unique=False)
    op.create_table('federation_report',
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('job_id'),
    )


def downgrade() -> None:
    op.drop_table('federation_report')
    op.drop_index('ix_audit_event_time', table_name='audit_event')
    op.drop_table('audit_event')
    op.drop_index('ix_federation_nonce_seen', table_name='federation_nonce')
    op.drop_table('federation_nonce')
    op.drop_table('federation_instance')
