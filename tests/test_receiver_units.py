"""The receiver's pure parts: dataset names from AE titles, completeness checks, transfer syntax preference."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless, RLELossless

from ingest.receiver import StoreRefused, accepted_transfer_syntaxes, dataset_name, parse_dataset
from tests.factories import write_series


@pytest.mark.parametrize(("called", "name"), [("my-dataset", "my-dataset"), ("  LUNG1 ", "LUNG1"), ("a/b", "a_b"), ("..", None), (".x", "x"), ("", None), ("   ", None)])
def test_dataset_names_from_called_ae_titles(called: str, name: str | None) -> None:
    assert dataset_name(called) == name


def test_explicit_vr_first_then_compressed_then_implicit() -> None:
    order = accepted_transfer_syntaxes()
    assert order[0] == ExplicitVRLittleEndian
    assert order.index(JPEGLSLossless) < order.index(ImplicitVRLittleEndian)
    assert order.index(RLELossless) < order.index(ImplicitVRLittleEndian)
    assert len(order) == len(set(order))


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9, 0.999])
def test_truncated_streams_are_refused(tmp_path: Path, keep: float) -> None:
    path = write_series(tmp_path, modality="CT", slices=1, rows=64, columns=64, seed=9).paths[0]
    content = path.read_bytes()
    parse_dataset(content)  # whole: fine
    with pytest.raises(StoreRefused) as refused:
        parse_dataset(content[: int(len(content) * keep)])
    assert refused.value.status == 0xC000


def test_not_dicom_is_refused() -> None:
    with pytest.raises(StoreRefused):
        parse_dataset(b"\0" * 128 + b"DICM" + BytesIO(b"garbage").getvalue())


@pytest.mark.parametrize(
    ("target", "safe"),
    [("/", "/"), ("/settings?x=1", "/settings?x=1"), ("//evil.example", "/"), ("/\\evil.example", "/"),
     ("https://evil.example/", "/"), ("", "/"), ("\\\\evil", "/"), ("/a\x01b", "/")],
)
def test_login_redirects_stay_on_this_site(target: str, safe: str) -> None:
    from pages.login import safe_next

    assert safe_next(target) == safe
