"""A selection of series: the one value that says which series an action, a page or a workflow is about.

Either *explicit* series (the cards someone picked) or a *search*: a dataset, a Lucene query and
filter chips (`Field:v1,v2`), which stands for every series matching it — never just the cards a
browser happened to load. It travels whole: in a URL's query string (`series=` repeated, or
`dataset=`, `q=`, `filter=` repeated), in JSON bodies (the same keys) and into the workflow engine,
which records it with the series it resolved to. Keeping one type is what stops a page from
sending `series=a&series=b` to a page that reads one comma-separated string, or from dropping the
query on the way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class SelectionError(ValueError):
    """A selection that cannot be what its parts say (e.g. both series and a search)."""


@dataclass(frozen=True)
class Selection:
    """Explicit `series`, or the series matching `dataset` AND `q` AND every filter; all empty means every series."""

    q: str | None = None
    filters: tuple[str, ...] = ()
    dataset: str | None = None
    series: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.series and (self.q or self.filters or self.dataset):
            raise SelectionError("a selection is either series or a search (dataset, q, filter), not both")

    # --- making one -------------------------------------------------------------------------

    @staticmethod
    def of(q: str | None = None, filters: Iterable[str] | None = None, dataset: str | None = None) -> "Selection":
        """A search; blank parts (`?q=&dataset=`, as a client fills a template) mean "not given"."""
        return Selection(q if q and q.strip() else None, tuple(f for f in (filters or ()) if f and f.strip()), dataset or None)

    @staticmethod
    def of_series(uids: Iterable[str]) -> "Selection":
        """Explicit series, in the order given, each once."""
        return Selection(series=tuple(dict.fromkeys(u.strip() for u in uids if u and u.strip())))

    @staticmethod
    def from_params(params: Mapping[str, Any]) -> "Selection":
        """From a URL's query: `series` (repeated, or comma-separated as older links had it) or `dataset`/`q`/`filter`.

        `params` is a multi-dict (Starlette's `QueryParams`, anything with `getlist`) or `parse_qs`'s dict of lists.
        """
        def values(key: str) -> list[str]:
            if hasattr(params, "getlist"):
                return [str(v) for v in params.getlist(key)]
            raw = params.get(key)
            if raw is None:
                return []
            return [str(v) for v in raw] if isinstance(raw, (list, tuple)) else [str(raw)]

        series = [uid for value in values("series") for uid in value.split(",")]  # UIDs are digits and dots: a comma never is one
        if any(s.strip() for s in series):
            return Selection.of_series(series)
        return Selection.of(next(iter(values("q")), None), values("filter"), next(iter(values("dataset")), None))

    @staticmethod
    def from_json(data: Mapping[str, Any] | None) -> "Selection":
        """From `{"series": [...]}` or `{"dataset", "q", "filter": [...]}` (`filters` is read too)."""
        if not data:
            return Selection()
        series = data.get("series") or []
        if isinstance(series, str):
            series = series.split(",")
        filters = data.get("filter", data.get("filters")) or []
        if isinstance(filters, str):
            filters = [filters]
        if any(str(s).strip() for s in series):
            if data.get("q") or filters or data.get("dataset"):
                raise SelectionError("a selection is either series or a search (dataset, q, filter), not both")
            return Selection.of_series(str(s) for s in series)
        return Selection.of(data.get("q"), [str(f) for f in filters], data.get("dataset"))

    # --- what it is -------------------------------------------------------------------------

    @property
    def explicit(self) -> bool:
        """Picked series rather than a search."""
        return bool(self.series)

    @property
    def searches(self) -> bool:
        """A query or filters narrow it (more than "this dataset" or "everything")."""
        return bool(self.q or self.filters)

    @property
    def whole_dataset(self) -> bool:
        """Exactly one dataset's series: what a remote runner can resolve on its own data by name."""
        return bool(self.dataset) and not self.searches

    # --- passing it on ------------------------------------------------------------------------

    def to_params(self) -> list[tuple[str, str]]:
        """Query-string pairs (for `urlencode`); `from_params` reads them back to an equal selection."""
        if self.series:
            return [("series", uid) for uid in self.series]
        pairs: list[tuple[str, str]] = []
        if self.dataset:
            pairs.append(("dataset", self.dataset))
        if self.q:
            pairs.append(("q", self.q))
        pairs.extend(("filter", f) for f in self.filters)
        return pairs

    def to_json(self) -> dict[str, Any]:
        """The JSON form (only the parts given); `from_json` reads it back to an equal selection."""
        if self.series:
            return {"series": list(self.series)}
        data: dict[str, Any] = {}
        if self.dataset:
            data["dataset"] = self.dataset
        if self.q:
            data["q"] = self.q
        if self.filters:
            data["filter"] = list(self.filters)
        return data

    # --- which series -------------------------------------------------------------------------

    def resolve(self, search: "SeriesResolver") -> list[str]:
        """The series UIDs it stands for now: the explicit ones as given, else every series the search matches."""
        return list(self.series) if self.series else search.series_uids(self)

    def count(self, search: "SeriesResolver") -> int:
        return len(self.series) if self.series else search.count(self)

    def describe(self, count: int | None = None) -> str:
        """For people: "query Modality:CT in brain-mr → 5 series", "brain-mr → 12 series", "3 series"."""
        if self.series:
            return _series_count(len(self.series) if count is None else count)
        parts = []
        if self.q and self.q.strip() != "*":  # `*` is how a link says "every series" (an empty selection says "none chosen")
            parts.append(f"query {self.q}")
        parts.extend(f"filter {f}" for f in self.filters)
        text = ", ".join(parts)
        if self.dataset:
            text = f"{text} in {self.dataset}" if text else self.dataset
        if not text:
            return f"all {_series_count(count)}" if count is not None else "all series"
        return f"{text} → {_series_count(count)}" if count is not None else text


class SeriesResolver(Protocol):
    """What resolves a search to series (core.search.service.SeriesSearch)."""

    def series_uids(self, selection: Selection) -> list[str]: ...

    def count(self, selection: Selection) -> int: ...


def _series_count(n: int) -> str:
    return f"{n:,} series"
