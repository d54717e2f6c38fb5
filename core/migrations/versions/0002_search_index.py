"""search index: value dictionary, documents, change log, and the backend's text index

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""
from alembic import op
import sqlalchemy as sa

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('search_field',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('search_value',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('field_id', sa.Integer(), nullable=False),
    sa.Column('display', sa.String(length=256), nullable=False),
    sa.Column('norm', sa.String(length=256), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('field_id', 'display')
    )
    bind = op.get_bind()
    if bind.dialect.name == 'postgresql':
        # prefix completion compares bytes, not the locale's collation
        op.execute('CREATE INDEX ix_search_value_field_norm ON search_value (field_id, norm COLLATE "C")')
    else:
        op.create_index('ix_search_value_field_norm', 'search_value', ['field_id', 'norm'])
    op.create_table('search_document',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('series_uid', sa.String(length=64), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('patient_pk', sa.Integer(), nullable=False),
    sa.Column('attributes', sa.JSON(), nullable=False),
    sa.Column('value_ids', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('series_uid')
    )
    op.create_table('search_change',
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('doc_id', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('seq')
    )
    if bind.dialect.name == 'postgresql':
        op.execute('CREATE TABLE search_text (id integer PRIMARY KEY, body tsvector NOT NULL, fielded tsvector NOT NULL)')
        op.execute('CREATE INDEX ix_search_text_body ON search_text USING gin (body)')
        op.execute('CREATE INDEX ix_search_text_fielded ON search_text USING gin (fielded)')
    else:
        # contentless: the words live once, in search_document.attributes; deletes re-derive them from there
        op.execute("CREATE VIRTUAL TABLE search_text USING fts5(body, fielded, content='', "
                   "tokenize=\"unicode61 remove_diacritics 0 tokenchars '_'\")")


def downgrade() -> None:
    op.execute('DROP TABLE search_text')
    op.drop_table('search_change')
    op.drop_table('search_document')
    op.drop_index('ix_search_value_field_norm', table_name='search_value')
    op.drop_table('search_value')
    op.drop_table('search_field')
