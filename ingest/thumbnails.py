"""Series thumbnails for the PACS browser.

A series is summarised by one representative picture: the middle slice of a
single-frame series, or the middle frame of a multi-frame instance. Only that
one file is decoded, because thumbnails are rendered during ingest and a
300-file CT must not cost 300 decodes.

Segmentations (SEG) are drawn as coloured overlays on the slice they segment,
picked where the segmented area is largest, because an overlay on the middle
slice is often empty. Objects without pixels (SR, PDF, KOS, RTSTRUCT,
presentation states ...) get a labelled placeholder so the browser never shows
a blank tile.

This module deliberately depends on nothing in the project (stdlib, numpy,
pillow and pydicom only) so it can run in worker processes and be tested alone.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, iter_pixels, pixel_array
from pydicom.tag import BaseTag, Tag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from ingest.error_text import plain_reason

__all__ = ["THUMBNAIL_SIZE", "NoImage", "ThumbnailError", "UndecodablePixels", "placeholder_thumbnail", "render_frame", "render_series_thumbnail"]

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 300

# Values bigger than this stay on disk when a dataset is read: multi-frame pixel
# data is then decoded frame by frame straight from the file, and large
# encapsulated documents (PDF, CDA) are never loaded just to be ignored.
_DEFER_SIZE = "1 MB"

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

# Segmentation Storage and Label Map Segmentation Storage (the latter is newer
# than pydicom's UID dictionary, hence the literal).
_SEG_SOP_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7"})

_OVERLAY_ALPHA = 0.5
# Largest distance (mm) at which a SEG frame position and a source slice
# position are considered the same plane; DS values carry at most 16 chars, so
# a copied position may differ from the source in the last digits.
_POSITION_TOLERANCE_MM = 0.1
# Reference headers are parsed up to Number of Frames only: UID, position and
# frame count are all we need, and vendor private groups (0029, ...) can be big.
_REFERENCE_HEADER_END = Tag(0x0028, 0x0008)

# Used when a segment carries no Recommended Display CIELab Value.
_SEGMENT_PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (255, 225, 25),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 190),
)

_BACKGROUND = (22, 24, 28)
_TEXT_COLOUR = (200, 204, 210)


class ThumbnailError(Exception):
    """A series file could not be read or its pixel data could not be decoded.

    The message always names the file so the caller can log something
    actionable before falling back to :func:`placeholder_thumbnail`; `reason`
    says the same without the file's path, for answers sent to clients.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class UndecodablePixels(ThumbnailError):
    """The pixel data is there but cannot be decoded (no decoder, or the decoder failed); `reason` names the transfer syntax."""


class NoImage(ThumbnailError):
    """The instance holds no pixel data at all (SR, ECG waveform, PDF…); `reason` names its SOP class."""


# --------------------------------------------------------------------------- public API


def render_series_thumbnail(
    paths: Sequence[Path],
    reference_paths: Sequence[Path] = (),
    size: int = THUMBNAIL_SIZE,
) -> bytes:
    """PNG bytes of a size×size thumbnail for one series.

    `paths` must already be in display order (slice position, else Instance
    Number); the middle one is the representative instance. `reference_paths`
    are the files of the series a SEG refers to, also sorted; they are only
    read for segmentations, and only their headers up to the matching slice.

    Raises :class:`ThumbnailError` when the representative file is unreadable
    or its pixel data cannot be decoded (e.g. no decoder installed).
    """
    if not paths:
        raise ThumbnailError("cannot render a thumbnail for a series without files")
    path = Path(paths[len(paths) // 2])
    ds = _read_dataset(path)
    if _is_segmentation(ds):
        image = _render_segmentation(path, ds, [Path(p) for p in reference_paths], size)
        return _encode_png(image)
    if not _has_pixel_data(ds):
        return placeholder_thumbnail(_object_label(ds), size)
    frame = _frame_count(ds) // 2
    pixels = _display_pixels(path, ds, frame)
    return _encode_png(_fit(Image.fromarray(pixels), _pixel_aspect(ds, frame), size))


def render_frame(
    path: Path,
    frame: int = 0,
    window: tuple[float, float, str] | None = None,
    viewport: tuple[int, int] | None = None,
    placeholder: bool = True,
) -> Image.Image:
    """One frame for display (WADO-RS rendered): 8-bit grey or RGB, physical aspect kept.

    `window` is (center, width, function) in modality units and overrides the stored
    window; `viewport` (columns, rows) bounds the size, never enlarging the image.
    Instances without pixels render as their label, or raise NoImage when `placeholder`
    is False (WADO-RS /rendered: a card is not the instance's image). Raises ThumbnailError.
    """
    ds = _read_dataset(path)
    if not _has_pixel_data(ds):
        if not placeholder:
            reason = f"this instance has no image to render ({_sop_class_name(ds.get('SOPClassUID'))})"
            raise NoImage(f"{path}: {reason}", reason)
        return Image.open(io.BytesIO(placeholder_thumbnail(_object_label(ds), (viewport or (THUMBNAIL_SIZE,))[0])))
    if not 0 <= frame < _frame_count(ds):
        reason = f"no frame {frame + 1} (the instance has {_frame_count(ds)})"
        raise ThumbnailError(f"{path}: {reason}", reason)
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if window is not None and photometric in ("MONOCHROME1", "MONOCHROME2"):
        values = _modality_values(_decode_frame(path, ds, frame), ds, frame)
        center, width, function = window
        if function.upper() == "SIGMOID":
            unit = 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
        else:
            unit = np.clip((values - (center - width / 2.0)) / width, 0.0, 1.0)
        if photometric == "MONOCHROME1":
            unit = 1.0 - unit
        pixels = (unit * 255.0 + 0.5).astype(np.uint8)
    else:
        pixels = _display_pixels(path, ds, frame)
    image = Image.fromarray(pixels)
    aspect = _pixel_aspect(ds, frame)
    if aspect != 1.0:
        image = image.resize((image.width, max(1, round(image.height * aspect))), Image.Resampling.BILINEAR)
    if viewport is not None:
        image.thumbnail((max(1, viewport[0]), max(1, viewport[1])), Image.Resampling.BILINEAR)
    return image


def placeholder_thumbnail(label: str, size: int = THUMBNAIL_SIZE) -> bytes:
    """PNG bytes of a dark size×size tile with `label` centred on it.

    Used for objects that have no pixels and, by callers, for files that failed
    to render, so every series in the browser still gets a recognisable tile.
    """
    image = Image.new("RGB", (size, size), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = _font(max(10, size // 14))
    lines = _wrap(draw, label, font, int(size * 0.85))
    _draw_centered_lines(draw, lines, font, size)
    return _encode_png(image)


# --------------------------------------------------------------------------- reading


def _read_dataset(path: Path) -> Dataset:
    """Read one instance with big values deferred, wrapping every failure.

    Raw datasets without a Part 10 header (old archives, some CD exports) are
    accepted if they look like DICOM. Any parse error becomes a ThumbnailError
    because the caller only needs to know *that* this file cannot be shown,
    and which file it was.
    """
    try:
        try:
            ds = dcmread(path, defer_size=_DEFER_SIZE)
        except InvalidDicomError:
            ds = dcmread(path, defer_size=_DEFER_SIZE, force=True)
            if "SOPClassUID" not in ds:
                raise
    except Exception as exc:  # pydicom raises many types for corrupt input
        raise ThumbnailError(f"{path}: cannot read DICOM file: {exc}", f"the stored file cannot be read as DICOM: {_without(path, exc)}") from exc
    _ensure_transfer_syntax(ds)
    return ds


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Record the encoding the file was actually read with when the header lacks it.

    pydicom needs a Transfer Syntax UID to decode pixels; for files without
    one, the VR/endianness used while parsing is the only truthful answer.
    """
    meta = getattr(ds, "file_meta", None)
    if meta is None or meta.get("TransferSyntaxUID"):
        return
    implicit, little = ds.original_encoding
    if implicit:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _has_pixel_data(ds: Dataset) -> bool:
    """True if the instance carries an image (SR, PDF, KOS, PR, RTSTRUCT don't)."""
    return any(keyword in ds for keyword in _PIXEL_KEYWORDS)


def _is_segmentation(ds: Dataset) -> bool:
    """SEG instances are recognised by modality or SOP class, whichever is set."""
    return ds.get("Modality") == "SEG" or str(ds.get("SOPClassUID", "")) in _SEG_SOP_CLASSES


def _frame_count(ds: Dataset) -> int:
    """Number of frames, 1 when absent or malformed."""
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def _transfer_syntax(ds: Dataset) -> UID | None:
    meta = getattr(ds, "file_meta", None)
    return meta.get("TransferSyntaxUID") if meta is not None else None


def _reads_frames_from_file(ds: Dataset) -> bool:
    """Whether frames can be decoded from the file without loading all pixel data.

    Deflated files must be inflated as a whole, and files without a Part 10
    header need the transfer syntax inferred while parsing, so both are decoded
    from the in-memory dataset instead.
    """
    has_part10_header = getattr(ds, "preamble", None) is not None
    return has_part10_header and _frame_count(ds) > 1 and _transfer_syntax(ds) != DeflatedExplicitVRLittleEndian


def _decode_frame(path: Path, ds: Dataset, frame: int) -> np.ndarray:
    """Decode one frame; YBR is converted to RGB by pydicom, 1-bit frames (SEG masks) unpacked by :func:`_bit_packed_frame`."""
    try:
        if _is_bit_packed(ds):
            return _bit_packed_frame(path, ds, frame)
        if _reads_frames_from_file(ds):
            return pixel_array(path, index=frame)
        return pixel_array(ds, index=frame)
    except Exception as exc:  # decoder plugins raise assorted types
        raise _undecodable(path, ds, exc) from exc


def _iter_frames(path: Path, ds: Dataset, indices: Iterable[int] | None = None) -> Iterator[np.ndarray]:
    """Decode frames one at a time so large SEGs never sit in memory whole."""
    source: Path | Dataset = path if _reads_frames_from_file(ds) else ds
    try:
        if _is_bit_packed(ds):
            for index in range(_frame_count(ds)) if indices is None else indices:
                yield _bit_packed_frame(path, ds, index)
            return
        for frame in iter_pixels(source, indices=indices):
            yield frame
    except Exception as exc:
        raise _undecodable(path, ds, exc) from exc


def _is_bit_packed(ds: Dataset) -> bool:
    """Native (not encapsulated) little-endian 1-bit Pixel Data, the encoding of binary SEG masks.

    pydicom 3.0's per-frame decoding (``pixel_array(index=n)``, ``iter_pixels``) assumes each
    frame starts on a byte boundary, which 1-bit frames of an odd size (17×23 = 391 bits) do
    not: they follow each other with no padding (PS3.5 8.1.1). Those frames are cut out here.
    """
    syntax = _transfer_syntax(ds)
    return (
        "PixelData" in ds
        and str(ds.get("BitsAllocated", "")) == "1"
        and syntax is not None
        and not UID(syntax).is_compressed
        and syntax != ExplicitVRBigEndian
    )


def _bit_packed_frame(path: Path, ds: Dataset, frame: int) -> np.ndarray:
    """Frame `frame` (0-based) of 1-bit pixel data as uint8 0/1, rows×columns; it starts at bit frame×rows×columns.

    Only the bytes that hold the frame are read, from the file when the value was left there
    (a SEG of thousands of frames is then never loaded whole for one of them).
    """
    rows, columns = int(ds.Rows), int(ds.Columns)
    pixels = rows * columns * int(ds.get("SamplesPerPixel") or 1)
    if not 0 <= frame < _frame_count(ds):
        raise ValueError(f"there is no frame {frame + 1} (the instance has {_frame_count(ds)})")
    start = frame * pixels
    first, end = start // 8, (start + pixels + 7) // 8
    packed = _pixel_bytes(path, ds, first, end)
    bits = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), bitorder="little")[start - first * 8 :][:pixels]
    if bits.size != pixels:
        raise ValueError(f"the pixel data ends before frame {frame + 1} does")
    shape = (rows, columns) if pixels == rows * columns else (rows, columns, pixels // (rows * columns))
    return bits.reshape(shape)


def _pixel_bytes(path: Path, ds: Dataset, first: int, end: int) -> bytes:
    """Bytes [first, end) of the native Pixel Data value: read from the file when deferred, else sliced from memory."""
    element = ds.get_item("PixelData", keep_deferred=True)
    if element is not None and element.value is None and _transfer_syntax(ds) != DeflatedExplicitVRLittleEndian:
        with path.open("rb") as f:
            f.seek(element.value_tell + first)
            return f.read(max(0, min(end, element.length) - first))
    return bytes(ds.PixelData[first:end])


def _undecodable(path: Path, ds: Dataset, exc: Exception) -> UndecodablePixels:
    """The error for pixels that do not decode: the message names the file, the reason the transfer syntax (name and UID)."""
    syntax = _transfer_syntax(ds)
    name = f"{syntax.name} ({syntax})" if syntax and syntax.name != syntax else f"transfer syntax {syntax}" if syntax else "an unknown transfer syntax"
    reason = f"cannot decode pixel data stored as {name}: {_without(path, exc)}"
    return UndecodablePixels(f"{path}: {reason}", reason)


def _without(path: Path, exc: Exception) -> str:
    """What `exc` says, without the file's path, other paths or a traceback (decoders and pydicom quote them)."""
    return plain_reason(RuntimeError(str(exc).replace(str(path), path.name)))


# --------------------------------------------------------------------------- functional groups


def _functional_group_value(ds: Dataset, frame: int, sequence: str, keyword: str) -> Any:
    """Look `keyword` up in the frame's functional group, then the shared one.

    Enhanced multi-frame objects move pixel spacing, rescale and window from the
    top level into these groups; per-frame values override shared ones.
    """
    containers: list[Dataset] = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        containers.append(per_frame[frame])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        containers.append(shared[0])
    for container in containers:
        items = container.get(sequence)
        if items and keyword in items[0]:
            return items[0].get(keyword)
    return None


def _attribute(ds: Dataset, frame: int, sequence: str, keyword: str) -> Any:
    """Top-level value if present (classic IODs), else the functional-group value."""
    value = ds.get(keyword)
    if value is not None and value != "":
        return value
    return _functional_group_value(ds, frame, sequence, keyword)


def _first_float(value: Any) -> float | None:
    """First value of a possibly multi-valued DS as a finite float, else None."""
    if value is None or value == "":
        return None
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        if len(value) == 0:
            return None
        value = value[0]
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


# --------------------------------------------------------------------------- pixel → display


def _display_pixels(path: Path, ds: Dataset, frame: int) -> np.ndarray:
    """Decode `frame` and map it to 8-bit: H×W (grey) or H×W×3 (RGB)."""
    raw = _decode_frame(path, ds, frame)
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric == "PALETTE COLOR":
        return _to_uint8_full_range(apply_color_lut(raw, ds), _palette_bits(ds))
    if raw.ndim == 3:
        return _colour_to_uint8(raw, ds)
    return _greyscale_to_uint8(raw, ds, frame, invert=photometric == "MONOCHROME1")


def _colour_to_uint8(raw: np.ndarray, ds: Dataset) -> np.ndarray:
    """RGB samples scaled from Bits Stored to 8 bits (pydicom already converted YBR)."""
    if raw.shape[-1] != 3:
        raw = raw[..., :3] if raw.shape[-1] > 3 else np.repeat(raw[..., :1], 3, axis=-1)
    if raw.dtype == np.uint8:
        return np.ascontiguousarray(raw)
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
    return _to_uint8_full_range(raw, bits)


def _palette_bits(ds: Dataset) -> int:
    """Bits per palette entry, from the red LUT descriptor (16 if unspecified)."""
    descriptor = ds.get("RedPaletteColorLookupTableDescriptor")
    try:
        return int(descriptor[2]) if descriptor else 16
    except (TypeError, ValueError, IndexError):
        return 16


def _to_uint8_full_range(values: np.ndarray, bits: int) -> np.ndarray:
    """Scale 0..2**bits-1 linearly to 0..255."""
    top = float((1 << max(1, min(bits, 32))) - 1)
    scaled = values.astype(np.float32) * (255.0 / top)
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def _greyscale_to_uint8(raw: np.ndarray, ds: Dataset, frame: int, invert: bool) -> np.ndarray:
    """Rescale, window (stored window, VOI LUT, else percentiles) and optionally invert."""
    values = _modality_values(raw, ds, frame)
    unit = _apply_window(values, ds, frame)
    if unit is None:
        unit = _apply_voi_lut_sequence(values, ds)
    if unit is None:
        unit = _percentile_window(values)
    if invert:
        unit = 1.0 - unit
    return (unit * 255.0 + 0.5).astype(np.uint8)


def _modality_values(raw: np.ndarray, ds: Dataset, frame: int) -> np.ndarray:
    """Stored values → modality units (e.g. HU), as float32.

    Window values in the header are expressed in these units, so windowing must
    happen after this step.
    """
    if "ModalityLUTSequence" in ds:
        values = apply_modality_lut(raw, ds).astype(np.float32)
    else:
        slope = _first_float(_attribute(ds, frame, "PixelValueTransformationSequence", "RescaleSlope"))
        intercept = _first_float(_attribute(ds, frame, "PixelValueTransformationSequence", "RescaleIntercept"))
        values = raw.astype(np.float32)
        if slope is not None and slope != 1.0:
            values *= np.float32(slope)
        if intercept:
            values += np.float32(intercept)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    return values


def _apply_window(values: np.ndarray, ds: Dataset, frame: int) -> np.ndarray | None:
    """Stored window (first value if several) mapped to 0..1, or None if absent/invalid."""
    center = _first_float(_attribute(ds, frame, "FrameVOILUTSequence", "WindowCenter"))
    width = _first_float(_attribute(ds, frame, "FrameVOILUTSequence", "WindowWidth"))
    if center is None or width is None or width <= 0:
        return None
    function = str(_attribute(ds, frame, "FrameVOILUTSequence", "VOILUTFunction") or "LINEAR").upper()
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
    low = center - width / 2.0
    return np.clip((values - low) / width, 0.0, 1.0)


def _apply_voi_lut_sequence(values: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """Apply a stored VOI LUT (common in mammography) when no window is given."""
    luts = ds.get("VOILUTSequence")
    if not luts:
        return None
    try:
        output = apply_voi_lut(values.astype(np.int64), ds, prefer_lut=True).astype(np.float32)
        bits = int(luts[0].LUTDescriptor[2])
    except Exception as exc:  # malformed LUTs are common; percentiles still give a picture
        log.debug("ignoring unusable VOI LUT: %s", exc)
        return None
    return np.clip(output / float((1 << bits) - 1), 0.0, 1.0)


def _percentile_window(values: np.ndarray) -> np.ndarray:
    """0.5–99.5 % percentile window: robust to a few hot or padding pixels.

    Large images are subsampled for the percentile estimate; it only has to be
    representative, and full-size percentiles dominate render time otherwise.
    """
    step = max(1, int(math.sqrt(values.size / 65536)))
    sample = values[::step, ::step]
    low, high = np.percentile(sample, (0.5, 99.5))
    if high <= low:
        high = low + 1.0
    return np.clip((values - np.float32(low)) / np.float32(high - low), 0.0, 1.0)


# --------------------------------------------------------------------------- geometry & output


def _pixel_aspect(ds: Dataset, frame: int) -> float:
    """Physical height/width of one pixel, so non-square pixels are not distorted."""
    spacing = _attribute(ds, frame, "PixelMeasuresSequence", "PixelSpacing")
    if spacing is None:
        spacing = ds.get("ImagerPixelSpacing")
    ratio = _ratio(spacing)
    if ratio is None:
        ratio = _ratio(ds.get("PixelAspectRatio"))
    return ratio if ratio is not None else 1.0


def _ratio(pair: Any) -> float | None:
    """vertical/horizontal of a two-valued attribute, None if unusable."""
    try:
        vertical, horizontal = float(pair[0]), float(pair[1])
    except (TypeError, ValueError, IndexError):
        return None
    if not (vertical > 0 and horizontal > 0) or not math.isfinite(vertical / horizontal):
        return None
    return min(max(vertical / horizontal, 0.05), 20.0)


def _fit(image: Image.Image, aspect: float, size: int) -> Image.Image:
    """Scale the longest physical side to `size` and letterbox on black."""
    width, height = image.width, image.height * aspect
    scale = size / max(width, height)
    target = (max(1, min(size, round(width * scale))), max(1, min(size, round(height * scale))))
    if target != image.size:
        image = image.resize(target, Image.Resampling.BILINEAR, reducing_gap=3.0)
    canvas = Image.new(image.mode, (size, size), 0)
    canvas.paste(image, ((size - target[0]) // 2, (size - target[1]) // 2))
    return canvas


def _encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


# --------------------------------------------------------------------------- labels


def _object_label(ds: Dataset) -> str:
    """"SR · Basic Text SR"-style label: modality plus short SOP class name."""
    modality = str(ds.get("Modality") or "").strip() or "?"
    return f"{modality} · {_sop_class_name(ds.get('SOPClassUID'))}"


def _sop_class_name(sop_class: Any) -> str:
    """pydicom's UID name without the redundant "Storage" suffix."""
    if not sop_class:
        return "Unknown object"
    uid = UID(str(sop_class))
    name = uid.name
    if name == str(uid):
        return "Unknown object"
    for suffix in (" Image Storage", " Storage"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _font(pixels: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at `pixels`; bitmap fallback if FreeType is missing."""
    try:
        return ImageFont.load_default(size=pixels)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Any, max_width: int) -> list[str]:
    """Word-wrap `text` to `max_width`, breaking first after a " · " separator.

    Keeping "RTSTRUCT ·" and "RT Structure Set" whole reads better than a
    break in the middle of the SOP class name.
    """
    if draw.textlength(text, font=font) <= max_width:
        return [text]
    parts = text.split(" · ")
    lines: list[str] = []
    for number, part in enumerate(parts):
        suffix = " ·" if number < len(parts) - 1 else ""
        lines.extend(_wrap_words(draw, part + suffix, font, max_width))
    return lines or [""]


def _wrap_words(draw: ImageDraw.ImageDraw, text: str, font: Any, max_width: int) -> list[str]:
    """Greedy word wrap; a single over-long word is kept on its own line."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if current and draw.textlength(candidate, font=font) > max_width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def _draw_centered_lines(draw: ImageDraw.ImageDraw, lines: list[str], font: Any, size: int) -> None:
    line_height = int(getattr(font, "size", 11) * 1.35)
    top = (size - line_height * len(lines)) // 2
    for number, line in enumerate(lines):
        centre = (size / 2, top + number * line_height + line_height / 2)
        draw.text(centre, line, fill=_TEXT_COLOUR, font=font, anchor="mm")


# --------------------------------------------------------------------------- segmentation


@dataclass(frozen=True)
class _SliceRef:
    """Where a SEG frame lies: source instance (and frame), and/or plane position."""

    sop_instance_uid: str | None
    frame_number: int | None
    position: tuple[float, float, float] | None

    @property
    def key(self) -> tuple[Any, ...] | None:
        """Frames sharing a key segment the same source slice."""
        if self.sop_instance_uid:
            return ("uid", self.sop_instance_uid, self.frame_number)
        if self.position is not None:
            return ("pos",) + tuple(round(v, 2) for v in self.position)
        return None


@dataclass(frozen=True)
class _Segment:
    number: int
    label: str
    colour: tuple[int, int, int]


def _render_segmentation(path: Path, ds: Dataset, reference_paths: list[Path], size: int) -> Image.Image:
    """Overlay the slice with the largest segmented area on its source image.

    Without the source (not yet received, or unreadable) the masks are drawn on
    black and labelled, so the caller can re-render once the reference arrives.
    """
    segments = _segments(ds)
    refs = [_slice_ref(ds, i) for i in range(_frame_count(ds))]
    labelmap = str(ds.get("SegmentationType", "")).upper() == "LABELMAP"
    scale = _fraction_scale(ds)
    chosen = _largest_slice(path, ds, _group_frames(refs), labelmap, scale)
    masks = _segment_masks(path, ds, chosen, labelmap, scale)
    base, aspect = _reference_image(reference_paths, refs[chosen[0]])
    if base is None:
        return _render_masks_alone(ds, chosen[0], masks, segments, size)
    rgb = base if base.ndim == 3 else np.repeat(base[..., None], 3, axis=2)
    masks = {number: _resize_mask(mask, rgb.shape[:2]) for number, mask in masks.items()}
    composite = _composite(rgb.astype(np.float32), masks, segments, alpha=_OVERLAY_ALPHA)
    return _fit(Image.fromarray(composite), aspect, size)


def _largest_slice(path: Path, ds: Dataset, groups: list[list[int]], labelmap: bool, scale: float) -> list[int]:
    """The frame group (one source slice) with the largest segmented area.

    Frames are decoded one at a time and only their area is kept. An empty
    SEG falls back to the middle slice.
    """
    areas = [
        float(np.count_nonzero(frame)) if labelmap else float(frame.sum(dtype=np.float64)) * scale
        for frame in _iter_frames(path, ds)
    ]
    if not any(areas):
        return groups[len(groups) // 2]
    return max(groups, key=lambda group: sum(areas[index] for index in group))


def _render_masks_alone(
    ds: Dataset, frame: int, masks: dict[int, np.ndarray], segments: dict[int, _Segment], size: int
) -> Image.Image:
    """Opaque segment colours on black, labelled as lacking the reference image."""
    rows, columns = next(iter(masks.values())).shape if masks else (int(ds.Rows), int(ds.Columns))
    composite = _composite(np.zeros((rows, columns, 3), np.float32), masks, segments, alpha=1.0)
    image = _fit(Image.fromarray(composite), _pixel_aspect(ds, frame), size)
    _label_unreferenced(image, segments, masks)
    return image


def _segments(ds: Dataset) -> dict[int, _Segment]:
    """Segment number → label and display colour (CIELab if given, else palette)."""
    result: dict[int, _Segment] = {}
    for index, item in enumerate(ds.get("SegmentSequence") or ()):
        number = int(item.get("SegmentNumber") or index + 1)
        lab = item.get("RecommendedDisplayCIELabValue")
        colour = _dicom_lab_to_rgb(lab) if lab else _SEGMENT_PALETTE[(number - 1) % len(_SEGMENT_PALETTE)]
        result[number] = _Segment(number, str(item.get("SegmentLabel") or f"Segment {number}"), colour)
    return result


def _segment_colour(segments: dict[int, _Segment], number: int) -> tuple[int, int, int]:
    segment = segments.get(number)
    return segment.colour if segment else _SEGMENT_PALETTE[(number - 1) % len(_SEGMENT_PALETTE)]


def _dicom_lab_to_rgb(value: Sequence[int]) -> tuple[int, int, int]:
    """DICOM-encoded CIELab (3 × uint16) → sRGB, D65 as in highdicom/pixelmed.

    Done by hand rather than through highdicom to keep this module's import
    cheap; the maths is the same, so colours match what highdicom wrote.
    """
    l_star = float(value[0]) * 100.0 / 0xFFFF
    a_star = float(value[1]) * 255.0 / 0xFFFF - 128.0
    b_star = float(value[2]) * 255.0 / 0xFFFF - 128.0
    fy = (l_star + 16.0) / 116.0
    fx, fz = fy + a_star / 500.0, fy - b_star / 200.0

    def inverse(component: float) -> float:
        cube = component**3
        return cube if cube > 0.008856 else (component - 16.0 / 116.0) / 7.787

    x, y, z = 0.95047 * inverse(fx), inverse(fy), 1.08883 * inverse(fz)
    linear = (
        x * 3.2406 - y * 1.5372 - z * 0.4986,
        -x * 0.9689 + y * 1.8758 + z * 0.0415,
        x * 0.0557 - y * 0.2040 + z * 1.0570,
    )

    def gamma(component: float) -> int:
        encoded = 1.055 * component ** (1 / 2.4) - 0.055 if component > 0.0031308 else 12.92 * component
        return int(round(min(max(encoded, 0.0), 1.0) * 255))

    r, g, b = (gamma(c) for c in linear)
    return r, g, b


def _slice_ref(ds: Dataset, frame: int) -> _SliceRef:
    """Source instance and plane position of one SEG frame."""
    uid, frame_number = _source_image(ds, frame)
    position = _functional_group_value(ds, frame, "PlanePositionSequence", "ImagePositionPatient")
    return _SliceRef(uid, frame_number, _position_tuple(position))


def _source_image(ds: Dataset, frame: int) -> tuple[str | None, int | None]:
    """Referenced SOP Instance UID (and frame number) from the derivation description.

    The shared group only counts when it names exactly one source image: a
    shared list of many sources says nothing about which one this frame is.
    """
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        sources = _derivation_sources(per_frame[frame])
        if sources:
            return _source_identity(sources[0])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        sources = _derivation_sources(shared[0])
        if len(sources) == 1:
            return _source_identity(sources[0])
    return None, None


def _derivation_sources(group: Dataset) -> list[Dataset]:
    return [
        source
        for derivation in group.get("DerivationImageSequence") or ()
        for source in derivation.get("SourceImageSequence") or ()
        if source.get("ReferencedSOPInstanceUID")
    ]


def _source_identity(source: Dataset) -> tuple[str, int | None]:
    return str(source.ReferencedSOPInstanceUID), _first_int(source.get("ReferencedFrameNumber"))


def _first_int(value: Any) -> int | None:
    number = _first_float(value)
    return int(number) if number is not None else None


def _position_tuple(value: Any) -> tuple[float, float, float] | None:
    try:
        x, y, z = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (x, y, z)


def _group_frames(refs: list[_SliceRef]) -> list[list[int]]:
    """SEG frame indices grouped by the source slice they segment, in frame order."""
    groups: dict[Any, list[int]] = {}
    for index, ref in enumerate(refs):
        key = ref.key if ref.key is not None else ("frame", index)
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def _fraction_scale(ds: Dataset) -> float:
    """Factor turning stored SEG values into 0..1 coverage."""
    if str(ds.get("SegmentationType", "")).upper() == "FRACTIONAL":
        return 1.0 / float(ds.get("MaximumFractionalValue") or 255)
    return 1.0


def _frame_segment_number(ds: Dataset, frame: int) -> int:
    number = _functional_group_value(ds, frame, "SegmentIdentificationSequence", "ReferencedSegmentNumber")
    return _first_int(number) or 1


def _segment_masks(path: Path, ds: Dataset, frames: list[int], labelmap: bool, scale: float) -> dict[int, np.ndarray]:
    """Segment number → float32 coverage (0..1) on the chosen slice.

    Label maps store segment numbers as pixel values; binary and fractional
    SEGs store one segment per frame.
    """
    masks: dict[int, np.ndarray] = {}
    for index, pixels in zip(frames, _iter_frames(path, ds, indices=frames)):
        if labelmap:
            for number in np.unique(pixels):
                if number:
                    masks[int(number)] = (pixels == number).astype(np.float32)
            continue
        number = _frame_segment_number(ds, index)
        coverage = pixels.astype(np.float32) * np.float32(scale)
        masks[number] = np.maximum(masks[number], coverage) if number in masks else coverage
    return masks


def _composite(
    base: np.ndarray, masks: dict[int, np.ndarray], segments: dict[int, _Segment], alpha: float
) -> np.ndarray:
    """Alpha-blend each segment's colour over `base` (float RGB 0..255) → uint8."""
    for number in sorted(masks):
        weight = (np.clip(masks[number], 0.0, 1.0) * np.float32(alpha))[..., None]
        colour = np.asarray(_segment_colour(segments, number), np.float32)
        base = base * (1.0 - weight) + colour * weight
    return np.clip(base + 0.5, 0, 255).astype(np.uint8)


def _resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resample when the SEG grid differs from the source grid."""
    if mask.shape == shape:
        return mask
    resized = Image.fromarray(mask.astype(np.float32), mode="F").resize((shape[1], shape[0]), Image.Resampling.NEAREST)
    return np.asarray(resized, np.float32)


def _label_unreferenced(image: Image.Image, segments: dict[int, _Segment], masks: dict[int, np.ndarray]) -> None:
    """Mark a reference-less SEG thumbnail so nobody mistakes black for anatomy."""
    draw = ImageDraw.Draw(image)
    font = _font(max(10, image.width // 20))
    names = [segments[n].label for n in sorted(masks) if n in segments]
    title = "SEG · " + (", ".join(names) if names else "segmentation")
    pad = max(4, image.width // 60)
    line_height = int(getattr(font, "size", 11) * 1.3)
    for line_number, text in enumerate(_wrap(draw, title, font, image.width - 2 * pad)[:2]):
        draw.text((pad, pad + line_number * line_height), text, fill=_TEXT_COLOUR, font=font)
    draw.text((pad, image.height - pad), "reference image not available", fill=_TEXT_COLOUR, font=font, anchor="ld")


# --------------------------------------------------------------------------- SEG reference lookup


def _reference_image(paths: list[Path], target: _SliceRef) -> tuple[np.ndarray | None, float]:
    """Display pixels and pixel aspect of the source slice, or (None, 1.0).

    A reference that is found but cannot be decoded degrades to the
    no-reference rendering: the SEG itself is fine and still worth showing.
    """
    found = _locate_reference(paths, target)
    if found is None:
        return None, 1.0
    path, frame = found
    try:
        ds = _read_dataset(path)
        return _display_pixels(path, ds, frame), _pixel_aspect(ds, frame)
    except ThumbnailError as exc:
        log.warning("SEG reference slice unusable, drawing mask alone: %s", exc)
        return None, 1.0


def _locate_reference(paths: list[Path], target: _SliceRef) -> tuple[Path, int] | None:
    """Find (file, frame index) of the source slice: by SOP Instance UID, else by position.

    Headers are read one at a time, starting at the file where the slice is
    expected and moving outwards, and the scan stops at the first match, so a
    300-slice reference series usually costs a handful of header reads.
    """
    headers: dict[int, Dataset | None] = {}

    def header(index: int) -> Dataset | None:
        if index not in headers:
            headers[index] = _reference_header(paths[index])
        return headers[index]

    best: tuple[float, Path, int] | None = None
    for index in _search_order(len(paths), _estimated_index(paths, target, header)):
        found = header(index)
        if found is None:
            continue
        path, frames = paths[index], _frame_count(found)
        if target.sop_instance_uid and str(found.get("SOPInstanceUID", "")) == target.sop_instance_uid:
            frame = (target.frame_number or 1) - 1
            return path, frame if 0 <= frame < frames else 0
        if target.position is None:
            continue
        for frame, position in _header_positions(path, found, frames):
            distance = math.dist(position, target.position)
            if distance <= _POSITION_TOLERANCE_MM and not target.sop_instance_uid:
                return path, frame
            if best is None or distance < best[0]:
                best = (distance, path, frame)
    if best is not None and best[0] <= _POSITION_TOLERANCE_MM:
        return best[1], best[2]
    return None


def _estimated_index(paths: list[Path], target: _SliceRef, header: Callable[[int], Dataset | None]) -> int:
    """Where in the sorted reference series the target slice should be.

    The caller sorts files by slice position, so the target's position
    interpolated between the first and last slice predicts its index; without
    positions the middle is as good a guess as any.
    """
    middle = len(paths) // 2
    if target.position is None or len(paths) < 3:
        return middle
    first, last = header(0), header(len(paths) - 1)
    start = _position_tuple(first.get("ImagePositionPatient")) if first is not None else None
    end = _position_tuple(last.get("ImagePositionPatient")) if last is not None else None
    if start is None or end is None:
        return middle
    axis = np.subtract(end, start)
    length = float(np.dot(axis, axis))
    if length < 1e-6:
        return middle
    fraction = float(np.dot(np.subtract(target.position, start), axis)) / length
    return int(min(max(round(fraction * (len(paths) - 1)), 0), len(paths) - 1))


def _search_order(count: int, start: int) -> list[int]:
    """0..count-1 ordered by distance from `start` (start, start+1, start-1, ...)."""
    return sorted(range(count), key=lambda index: (abs(index - start), -index))


def _reference_header(path: Path) -> Dataset | None:
    """Header up to Number of Frames; unreadable files are skipped, not fatal."""
    try:
        with open(path, "rb") as handle:
            return read_partial(handle, stop_when=_past_reference_header)
    except Exception as exc:
        log.debug("skipping unreadable reference %s: %s", path, exc)
        return None


def _past_reference_header(tag: BaseTag, vr: str | None, length: int) -> bool:
    return tag > _REFERENCE_HEADER_END


def _header_positions(path: Path, header: Dataset, frames: int) -> Iterator[tuple[int, tuple[float, float, float]]]:
    """(frame index, Image Position Patient) of each frame of a reference file.

    Enhanced multi-frame positions live in the per-frame functional groups,
    past the partial header, so those files are re-read up to the pixel data.
    """
    if frames == 1:
        position = _position_tuple(header.get("ImagePositionPatient"))
        if position is not None:
            yield 0, position
        return
    try:
        full = dcmread(path, stop_before_pixels=True)
    except Exception as exc:
        log.debug("skipping unreadable reference %s: %s", path, exc)
        return
    for frame in range(frames):
        value = _functional_group_value(full, frame, "PlanePositionSequence", "ImagePositionPatient")
        position = _position_tuple(value)
        if position is not None:
            yield frame, position
