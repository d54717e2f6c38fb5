"""Series search: Lucene queries, filters, aggregations, completion and sorted paging.

`query` knows the Lucene syntax, `analysis` what a word is, `indexing` writes the index in
the caller's transaction, `text_index` is the database's full-text index (SQLite FTS5 or
PostgreSQL GIN), `columns` the in-memory value columns, and `service` puts them together.
"""
