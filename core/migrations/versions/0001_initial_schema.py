"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-25
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dataset',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('username', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('created', sa.DateTime(), nullable=False),
    sa.Column('updated', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('patient',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('patient_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('patient_name', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
    sa.Column('attributes', sa.JSON(), nullable=False),
    sa.Column('created', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('patient_id')
    )
    op.create_table('user',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('password_hash', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
    sa.Column('is_admin', sa.Boolean(), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('created', sa.DateTime(), nullable=False),
    sa.Column('last_login', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('username')
    )
    op.create_table('api_token',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('token_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('prefix', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('created', sa.DateTime(), nullable=False),
    sa.Column('last_used', sa.DateTime(), nullable=True),
    sa.Column('revoked', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_token_user_id'), ['user_id'], unique=False)

    op.create_table('study',
    sa.Column('study_uid', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('patient_pk', sa.Integer(), nullable=False),
    sa.Column('study_date', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('study_description', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
    sa.Column('attributes', sa.JSON(), nullable=False),
    sa.Column('created', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['patient_pk'], ['patient.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('study_uid')
    )
    with op.batch_alter_table('study', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_study_patient_pk'), ['patient_pk'], unique=False)
        batch_op.create_index(batch_op.f('ix_study_study_date'), ['study_date'], unique=False)

    op.create_table('series',
    sa.Column('series_uid', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('modality', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('series_description', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
    sa.Column('series_number', sa.Integer(), nullable=True),
    sa.Column('attributes', sa.JSON(), nullable=False),
    sa.Column('arrived', sa.DateTime(), nullable=False),
    sa.Column('updated', sa.DateTime(), nullable=False),
    sa.Column('instance_count', sa.Integer(), nullable=False),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('min_instance_number', sa.Integer(), nullable=True),
    sa.Column('max_instance_number', sa.Integer(), nullable=True),
    sa.Column('missing_instance_numbers', sa.JSON(), nullable=False),
    sa.Column('is_complete', sa.Boolean(), nullable=False),
    sa.Column('referenced_series_uid', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('thumbnail_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['study_uid'], ['study.study_uid'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('series_uid')
    )
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_series_arrived'), ['arrived'], unique=False)
        batch_op.create_index(batch_op.f('ix_series_modality'), ['modality'], unique=False)
        batch_op.create_index(batch_op.f('ix_series_referenced_series_uid'), ['referenced_series_uid'], unique=False)
        batch_op.create_index(batch_op.f('ix_series_study_uid'), ['study_uid'], unique=False)
        batch_op.create_index(batch_op.f('ix_series_updated'), ['updated'], unique=False)

    op.create_table('dataset_series',
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('series_uid', sa.String(length=64), nullable=False),
    sa.Column('added', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['dataset.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['series_uid'], ['series.series_uid'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('dataset_id', 'series_uid')
    )
    with op.batch_alter_table('dataset_series', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dataset_series_series_uid'), ['series_uid'], unique=False)

    op.create_table('instance',
    sa.Column('sop_instance_uid', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('series_uid', sa.String(length=64), nullable=False),
    sa.Column('sop_class_uid', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('transfer_syntax_uid', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('instance_number', sa.Integer(), nullable=True),
    sa.Column('slice_position', sa.Float(), nullable=True),
    sa.Column('number_of_frames', sa.Integer(), nullable=False),
    sa.Column('path', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('calling_aet', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('called_aet', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('peer_address', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('received', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['series_uid'], ['series.series_uid'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sop_instance_uid')
    )
    with op.batch_alter_table('instance', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_instance_series_uid'), ['series_uid'], unique=False)

    op.create_table('series_tag',
    sa.Column('series_uid', sa.String(length=64), nullable=False),
    sa.Column('tag', sa.String(length=128), nullable=False),
    sa.Column('added', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['series_uid'], ['series.series_uid'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('series_uid', 'tag')
    )
    with op.batch_alter_table('series_tag', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_series_tag_tag'), ['tag'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('series_tag', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_series_tag_tag'))

    op.drop_table('series_tag')
    with op.batch_alter_table('instance', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instance_series_uid'))

    op.drop_table('instance')
    with op.batch_alter_table('dataset_series', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dataset_series_series_uid'))

    op.drop_table('dataset_series')
    with op.batch_alter_table('series', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_series_updated'))
        batch_op.drop_index(batch_op.f('ix_series_study_uid'))
        batch_op.drop_index(batch_op.f('ix_series_referenced_series_uid'))
        batch_op.drop_index(batch_op.f('ix_series_modality'))
        batch_op.drop_index(batch_op.f('ix_series_arrived'))

    op.drop_table('series')
    with op.batch_alter_table('study', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_study_study_date'))
        batch_op.drop_index(batch_op.f('ix_study_patient_pk'))

    op.drop_table('study')
    with op.batch_alter_table('api_token', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_token_user_id'))

    op.drop_table('api_token')
    op.drop_table('user')
    op.drop_table('patient')
    op.drop_table('dataset')
