"""search index: value dictionary with its word index, documents, change log

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
        # prefix searches compare bytes, not the locale's collation
        op.execute('CREATE INDEX ix_search_value_field_norm ON search_value (field_id, norm COLLATE "C")')
        op.execute('CREATE INDEX ix_search_value_norm ON search_value (norm COLLATE "C")')
        # the words of each distinct value, built by Vireo (never to_tsvector): phrase and word search
        op.execute('ALTER TABLE search_value ADD COLUMN words tsvector')
        op.execute('CREATE INDEX ix_search_value_words ON search_value USING gin (words)')
    else:
        op.create_index('ix_search_value_field_norm', 'search_value', ['field_id', 'norm'])
        op.create_index('ix_search_value_norm', 'search_value', ['norm'])
        # contentless: a value's words never change, so its row is never deleted or rewritten
        op.execute("CREATE VIRTUAL TABLE search_value_text USING fts5(words, content='', detail=full, "
                   "tokenize=\"unicode61 remove_diacritics 0\")")
    op.create_table('search_document',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('series_uid', sa.String(length=64), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('patient_pk', sa.Integer(), nullable=False),
    sa.Column('value_ids', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('series_uid')
    )
    op.create_table('search_change',
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('doc_id', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('seq')
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        op.execute('DROP TABLE search_value_text')
    op.drop_table('search_change')
    op.drop_table('search_document')
    op.drop_table('search_value')
    op.drop_table('search_field')
