"""The DAGs that reach other PACS: `query-pacs` and `retrieve-from-pacs`.

Their steps are the plain functions of ingest.pacs_client; `send-dicom` lives with the
other built-in DAGs (ingest.dags). Both take no input series: they bring series in.
"""

from __future__ import annotations

import json

from core.workflows.context import JobContext
from core.workflows.dag import Dag, DagInput, Step
from ingest.pacs_client import QueryPacsConfig, RetrieveFromPacsConfig, query_pacs_step, retrieve_from_pacs_step


def _query(ctx: JobContext) -> None:
    conf: QueryPacsConfig = ctx.conf  # type: ignore[assignment]
    results = query_pacs_step(conf)
    path = ctx.output_file("results.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    ctx.log.info("%d %s-level matches on %s@%s:%d", len(results), conf.level, conf.node.ae_title, conf.node.host, conf.node.port)
    for result in results[:200]:
        ctx.log.info("  %s", json.dumps(result, ensure_ascii=False))
    if len(results) > 200:
        ctx.log.info("  … and %d more in results.json", len(results) - 200)


def _retrieve(ctx: JobContext) -> None:
    from ingest.indexer import IndexWriter
    from ingest.intake import Intake

    conf: RetrieveFromPacsConfig = ctx.conf  # type: ignore[assignment]
    # C-GET stores in this job's process, through the same intake as the receiver; C-MOVE arrives at the receiver.
    writer = IndexWriter(ctx.db)
    writer.start()
    try:
        report = retrieve_from_pacs_step(conf, Intake(ctx.store, writer), ctx.db)
    finally:
        writer.stop()
    ctx.series_changed(report.series_uids, thumbnails=True)
    ctx.log.info(
        "%s of study %s from %s@%s:%d: %d instances stored, %d failed, %d warnings; series %s%s",
        conf.method.upper(), conf.study_uid, conf.node.ae_title, conf.node.host, conf.node.port, report.completed, report.failed,
        report.warnings, ", ".join(report.series_uids) or "none", f" (dataset {conf.dataset})" if conf.dataset else "",
    )
    for reason in report.refused[:20]:
        ctx.log.warning("not stored: %s", reason)


query_pacs = Dag(
    dag_id="query-pacs",
    description="Query another PACS (C-FIND) for patients, studies, series or instances; the matches are in the job's log and results.json.",
    steps=[Step("query", _query, retries=1, retry_delay=5)],
    config=QueryPacsConfig,
    input=DagInput.NONE,
    tags=("pacs",),
)

retrieve_from_pacs = Dag(
    dag_id="retrieve-from-pacs",
    description="Retrieve a study, or some of its series, from another PACS (C-GET, or C-MOVE to this Vireo) into a dataset.",
    steps=[Step("retrieve", _retrieve, retries=1, retry_delay=5)],
    config=RetrieveFromPacsConfig,
    input=DagInput.NONE,
    tags=("pacs",),
)
