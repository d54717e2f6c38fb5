"""Analysis DAGs: image analysis whose results (SEG, SR, tables) are written back with `ingest.results_writeback`."""
