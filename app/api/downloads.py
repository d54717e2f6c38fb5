"""`/api/download`: a zip of the DICOM files of some series, or of every series a query matches."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import StreamingResponse

from app import series_download
from app.api.search_params import search_errors, selection
from app.runtime import current_services
from core.selection import Selection

router = APIRouter(prefix="/api", tags=["series"])


@router.get("/download", response_class=StreamingResponse, responses={200: {"content": {"application/zip": {}}}})
def download(
    series: list[str] | None = Query(None, description="SeriesInstanceUIDs; without them, every series matching q/filter/dataset"),
    chosen: Selection = Depends(selection),
    name: str = Query("vireo-series", max_length=100, pattern=r"^[A-Za-z0-9._-]+$", description="file name of the zip (without .zip)"),
) -> StreamingResponse:
    """Streams `StudyUID/SeriesUID/SOPInstanceUID.dcm` entries; nothing is buffered, so there is no size limit."""
    if series:  # picked series win over a search, as on the Datasets page's action row
        chosen = Selection.from_params({"series": series})
    with search_errors():
        uids = chosen.resolve(current_services().search)
    paths = series_download.instance_paths(uids)
    if not paths:
        raise HTTPException(404, "no stored instances for that selection")
    return StreamingResponse(
        series_download.zip_stream(paths),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}.zip"'},
    )
