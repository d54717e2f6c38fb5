"""Series search: Lucene queries, filters, aggregations, completion and sorted paging.

`query` is the only module that knows Lucene syntax (it builds a small query tree);
`analysis` says what a word is; `indexing` writes the value dictionary and the per-series
documents in the caller's transaction; `value_words` is the database's full-text index over the
dictionary's distinct values (SQLite FTS5 or PostgreSQL GIN); `columns` holds every series'
value ids in memory; `service` evaluates a query tree: values first, from the database, then the
series holding them, from the columns.
"""
