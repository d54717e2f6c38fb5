"""workflows, jobs and past job runs

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('workflow',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('dag_id', sa.String(length=128), nullable=False),
    sa.Column('dataset', sa.String(length=128), nullable=True),
    sa.Column('conf', sa.JSON(), nullable=False),
    sa.Column('username', sa.String(length=128), nullable=False),
    sa.Column('owner_instance', sa.String(length=128), nullable=False),
    sa.Column('service', sa.Boolean(), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('created', sa.DateTime(), nullable=False),
    sa.Column('updated', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('workflow', schema=None) as batch_op:
        batch_op.create_index('ix_workflow_name', ['name'], unique=False)
        batch_op.create_index('ix_workflow_dag_id', ['dag_id'], unique=False)
        batch_op.create_index('ix_workflow_username', ['username'], unique=False)
        batch_op.create_index('ix_workflow_deleted_created', ['deleted', 'created', 'id'], unique=False)

    op.create_table('job',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workflow_id', sa.String(length=36), nullable=False),
    sa.Column('dag_id', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('run', sa.Integer(), nullable=False),
    sa.Column('conf', sa.JSON(), nullable=False),
    sa.Column('series', sa.JSON(), nullable=False),
    sa.Column('dataset', sa.String(length=128), nullable=True),
    sa.Column('username', sa.String(length=128), nullable=False),
    sa.Column('runner_instance', sa.String(length=128), nullable=False),
    sa.Column('owner_instance', sa.String(length=128), nullable=False),
    sa.Column('external_job_id', sa.Integer(), nullable=True),
    sa.Column('timeout', sa.Float(), nullable=True),
    sa.Column('progress_done', sa.Integer(), nullable=False),
    sa.Column('progress_total', sa.Integer(), nullable=False),
    sa.Column('steps', sa.JSON(), nullable=False),
    sa.Column('error', sa.String(length=4000), nullable=False),
    sa.Column('created', sa.DateTime(), nullable=False),
    sa.Column('updated', sa.DateTime(), nullable=False),
    sa.Column('started', sa.DateTime(), nullable=True),
    sa.Column('ended', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['workflow_id'], ['workflow.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.create_index('ix_job_workflow_id', ['workflow_id'], unique=False)
        batch_op.create_index('ix_job_dag_id', ['dag_id'], unique=False)
        batch_op.create_index('ix_job_status_id', ['status', 'id'], unique=False)

    op.create_table('job_run',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('run', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('steps', sa.JSON(), nullable=False),
    sa.Column('error', sa.String(length=4000), nullable=False),
    sa.Column('started', sa.DateTime(), nullable=True),
    sa.Column('ended', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['job.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('job_run', schema=None) as batch_op:
        batch_op.create_index('ix_job_run_job_id', ['job_id'], unique=False)


def downgrade() -> None:
    op.drop_table('job_run')
    op.drop_table('job')
    op.drop_table('workflow')
