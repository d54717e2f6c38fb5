"""What a workflow runs on: the one selection a request names, and the series a local runner's jobs get from it.

A request names its input as a `core.selection.Selection` (picked series, or dataset + query +
filters) or with the older `dataset` / `series` fields, which mean the same as a selection of a
whole dataset or of those series. Resolving happens once, when the workflow is created; the engine
records the selection and the series it came to, so the Workflow List can say both.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from core.catalog import unknown_series
from core.models import Dataset, DatasetSeries
from core.selection import Selection, SeriesResolver
from core.workflows.dag import Dag, DagInput
from core.workflows.errors import WorkflowError

MAX_SERIES_PER_WORKFLOW = 100_000


def input_selection(dag: Dag, dataset: str | None, series: list[str] | None, selection: Selection | None) -> Selection | None:
    """The one selection a request names (None for a DAG without input), or why the request is wrong."""
    given = selection is not None and selection != Selection()
    if dag.input is DagInput.NONE:
        if dataset or series or given:
            raise WorkflowError(f"{dag.dag_id} takes no input series: leave out 'dataset', 'series' and 'selection'")
        return None
    if given and (dataset or series):
        raise WorkflowError("give either 'selection', or 'dataset' or 'series', not both")
    if dataset and series:
        raise WorkflowError("give either 'dataset' or 'series', not both")
    if given:
        return selection
    if dataset:
        return Selection.of(dataset=dataset)
    if series:
        return Selection.of_series(str(s) for s in series)
    if dag.federated:
        raise WorkflowError(f"{dag.dag_id} is federated and needs a dataset by name (each runner resolves it on its own data)")
    raise WorkflowError(f"{dag.dag_id} needs input: give 'dataset' (a dataset name), 'series' (SeriesInstanceUIDs) or 'selection' (a search)")


def input_series(session: Any, chosen: Selection | None, search: SeriesResolver | None) -> list[str]:
    """The series a local runner's jobs get: the picked ones (checked), a dataset's, or every series a search matches."""
    if chosen is None:
        return []
    if chosen.explicit:
        uids = list(chosen.series)
        if len(uids) > MAX_SERIES_PER_WORKFLOW:
            raise WorkflowError(f"at most {MAX_SERIES_PER_WORKFLOW} series per workflow")
        problem = unknown_series(session, uids)
        if problem:
            raise WorkflowError(problem)
        return uids
    if chosen.whole_dataset:
        return dataset_uids(session, chosen.dataset)  # type: ignore[arg-type]
    if search is None:
        raise WorkflowError("this instance cannot resolve a search to series: give 'dataset' or 'series'")
    try:
        uids = chosen.resolve(search)
    except (ValueError, LookupError) as exc:  # a bad query, an unknown dataset
        raise WorkflowError(str(exc).strip("'\"")) from exc
    if not uids:
        raise WorkflowError(f"no series match {chosen.describe()}")
    if len(uids) > MAX_SERIES_PER_WORKFLOW:
        raise WorkflowError(f"{chosen.describe(len(uids))}: at most {MAX_SERIES_PER_WORKFLOW} series per workflow")
    return uids


def dataset_uids(session: Any, dataset: str) -> list[str]:
    """A local dataset's series by name (its membership, not the search), or why there are none to run on."""
    dataset_id = session.execute(select(Dataset.id).where(Dataset.name == dataset)).scalar_one_or_none()
    if dataset_id is None:
        raise WorkflowError(f"no dataset {dataset!r}")
    uids = list(
        session.execute(
            select(DatasetSeries.series_uid).where(DatasetSeries.dataset_id == dataset_id).order_by(DatasetSeries.series_uid)
        ).scalars()
    )
    if not uids:
        raise WorkflowError(f"dataset {dataset!r} holds no series")
    return uids
