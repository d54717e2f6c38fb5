"""The two layouts of a NIfTI upload (Kaapana's itk2dcm rules, `reference/kaapana.md` §4) turned into `NiftiCase`s.

A folder with `dataset.json` is an nnU-Net v2 dataset; any other folder with NIfTI files
(or with `cases/` and `segs/`) is the basic format. Where Kaapana is loose we are strict,
because a silent mismatch would import the wrong segmentation:

- basic, flat: `Case11_segmentation.nii.gz` (or `_seg`, `-seg`, `.seg`) pairs with the case
  whose stem is exactly `Case11`, never with `Case1`;
- `series_tags` keys are matched as substrings of the case path relative to the upload;
- nnU-Net: the StudyInstanceUID is derived from the dataset name and the case id, so the
  channels of a case share one study, and two datasets with a `case_001` do not.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.uid import PYDICOM_ROOT_UID, generate_uid

from ingest.nifti_convert import MODALITIES, CaseError, NiftiCase, SegInfo, SegLabel, check_tags

NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
SEGMENTATION = re.compile(r"[_\-. ]?[sS]eg(mentation)?$")
MAX_LABEL = 65535  # label maps are stored as 8- or 16-bit values (nifti_convert checks the voxels the same way)
CHANNEL = re.compile(r"^\d{1,4}$")  # nnU-Net channel keys: the file names' 4-digit _XXXX
NOT_BASIC_ROOTS = {"segs", "cases", "imagestr", "imagests", "labelstr", "labelsts"}


@dataclass
class CollectionPlan:
    root: Path
    kind: str  # "basic" or "nnunet"
    cases: list[NiftiCase]


def stem(path: Path) -> str:
    return NIFTI.sub("", path.name)


def _read_json(path: Path, label: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CaseError(f"{label}: not valid JSON ({exc})") from exc


def _relative(path: Path, top: Path) -> str:
    return path.relative_to(top).as_posix()


def find_collections(top: Path, modality: str, upload_name: str = "") -> list[CollectionPlan]:
    """Every collection under the extracted upload `top`; CaseError if the upload holds none or is malformed.

    `upload_name` (the zip's name without `.zip`) stands in for the folder name of files at
    the top of the upload, where the folder is only where the import unpacked them.
    """
    plans = []
    for folder in sorted([top, *(p for p in top.rglob("*") if p.is_dir())]):
        if "__MACOSX" in folder.parts:
            continue
        if (folder / "dataset.json").is_file():
            plans.append(CollectionPlan(folder, "nnunet", nnunet_cases(folder, top)))
        elif folder.name.lower() not in NOT_BASIC_ROOTS and not any((p / "dataset.json").is_file() for p in folder.parents if p.is_relative_to(top)):
            cases = basic_cases(folder, top, modality, upload_name)
            if cases:
                plans.append(CollectionPlan(folder, "basic", cases))
    if not plans:
        raise CaseError("the upload holds no NIfTI files (.nii or .nii.gz) in a layout this import knows")
    return plans


def _seg_info(path: Path, label: str) -> SegInfo:
    data = _read_json(path, label)
    if not isinstance(data, dict) or not isinstance(data.get("seg_info"), list):
        raise CaseError(f"{label}: needs a list 'seg_info' of {{'label_name', 'label_int'}} entries")
    labels = []
    for entry in data["seg_info"]:
        try:
            value = int(entry["label_int"])
            name = str(entry["label_name"]).strip()
        except (KeyError, TypeError, ValueError, OverflowError):
            raise CaseError(f"{label}: seg_info entry {_shown(entry)} needs 'label_name' and an integer 'label_int'") from None
        if value == 0:
            continue
        if not name or not 0 < value <= MAX_LABEL:
            raise CaseError(f"{label}: seg_info entry {_shown(entry)} needs a name and a label_int from 1 to {MAX_LABEL}")
        if value in {item.value for item in labels}:
            raise CaseError(f"{label}: label_int {value} appears twice")
        labels.append(SegLabel(value, name))
    if not labels:
        raise CaseError(f"{label}: seg_info lists no labels")
    return SegInfo(labels, str(data.get("algorithm") or ""), str(data.get("task_body_part") or ""))


def _shown(value: object, limit: int = 120) -> str:
    """A value from an uploaded file as a message shows it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _meta_data(path: Path, label: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    if not path.is_file():
        return {}, {}
    data = _read_json(path, label)
    if not isinstance(data, dict):
        raise CaseError(f"{label}: must be an object with 'global_tags' and/or 'series_tags'")
    unknown = set(data) - {"global_tags", "series_tags"}
    if unknown:
        raise CaseError(f"{label}: unknown keys {sorted(unknown)} (expected 'global_tags', 'series_tags')")
    global_tags = data.get("global_tags") or {}
    series_tags = data.get("series_tags") or {}
    if not isinstance(global_tags, dict) or not isinstance(series_tags, dict) or not all(isinstance(v, dict) for v in series_tags.values()):
        raise CaseError(f"{label}: 'global_tags' must map tags to values and 'series_tags' paths to such maps")
    return check_tags(global_tags, label), {key: check_tags(tags, f"{label} [{key}]") for key, tags in series_tags.items()}


def basic_cases(folder: Path, top: Path, modality: str, upload_name: str = "") -> list[NiftiCase]:
    """The basic format: NIfTI files beside their `_segmentation` files, or `cases/` and `segs/` with equal names.

    Operators' Name is the collection's folder name (as in Kaapana), the upload's name for the top folder.
    """
    label = _relative(folder, top) if folder != top else "the upload"
    images: list[Path]
    segs: dict[Path, Path] = {}
    if (folder / "cases").is_dir():
        images = sorted(p for p in (folder / "cases").iterdir() if p.is_file() and NIFTI.search(p.name))
        seg_dir = folder / "segs"
        by_name = {p.name: p for p in seg_dir.iterdir()} if seg_dir.is_dir() else {}
        for image in images:
            if image.name in by_name:
                segs[image] = by_name.pop(image.name)
        for orphan in sorted(by_name):
            if NIFTI.search(orphan):
                raise CaseError(f"{_relative(seg_dir / orphan, top)}: a segmentation without a case of the same name in cases/")
    else:
        files = sorted(p for p in folder.iterdir() if p.is_file() and NIFTI.search(p.name))
        images = [p for p in files if not SEGMENTATION.search(stem(p))]
        by_stem: dict[str, Path] = {}
        for image in images:
            if stem(image) in by_stem:
                raise CaseError(f"{_relative(image, top)}: duplicate case id {stem(image)!r} (also {by_stem[stem(image)].name})")
            by_stem[stem(image)] = image
        for seg in (p for p in files if SEGMENTATION.search(stem(p))):
            case_stem = SEGMENTATION.sub("", stem(seg))
            image = by_stem.get(case_stem)
            if image is None:
                raise CaseError(f"{_relative(seg, top)}: a segmentation without a case named {case_stem}.nii(.gz)")
            if image in segs:
                raise CaseError(f"{_relative(seg, top)}: duplicate identifiers, {segs[image].name} also segments {image.name}")
            segs[image] = seg
    if not images:
        return []
    global_tags, series_tags = _meta_data(folder / "meta_data.json", f"{label}/meta_data.json" if folder != top else "meta_data.json")
    seg_info = None
    if segs:
        info_path = folder / "seg_info.json"
        if not info_path.is_file():
            raise CaseError(f"{label}: has segmentations but no seg_info.json (label names and values)")
        seg_info = _seg_info(info_path, _relative(info_path, top))
    cases = []
    for number, image in enumerate(images, start=1):
        path = _relative(image, top)
        tags = dict(global_tags)
        for key, extra in series_tags.items():
            if key in path:
                tags.update(extra)
        cases.append(NiftiCase(image=image, label=path, case_id=stem(image), series_number=number, tags=tags, modality=modality,
                               operator=_operator(folder, top, upload_name), segmentation=segs.get(image), seg_info=seg_info if image in segs else None))
    return cases


def _operator(folder: Path, top: Path, upload_name: str) -> str:
    return (upload_name or top.name) if folder == top else folder.name


def _channel_modality(name: str) -> tuple[str, str]:
    """Modality and series description for an nnU-Net channel name (MRI/MRT become MR, PET PT; unknown names are MR, named in the description)."""
    text = name.strip()
    upper = text.upper()
    if upper in ("MRI", "MRT"):
        return "MR", text
    if upper == "PET":
        return "PT", text
    if upper in MODALITIES:
        return upper, text
    return "MR", text


def _channels(spec: dict[Any, Any], label: str) -> dict[int, str]:
    """dataset.json's `channel_names`: keys "0", "1", … (the files' _0000, _0001, …) to names."""
    channels = {}
    for key, name in spec.items():
        if not CHANNEL.match(str(key).strip()):
            raise CaseError(f"{label}: channel_names key {_shown(key)} is not a channel number (\"0\", \"1\", … as in the files' _0000, _0001)")
        if isinstance(name, (dict, list)) or name is None or not str(name).strip():
            raise CaseError(f"{label}: channel {key} needs a name such as \"CT\" or \"T2\", not {_shown(name)}")
        number = int(str(key).strip())
        if number in channels:
            raise CaseError(f"{label}: channel {number} appears twice in channel_names")
        channels[number] = str(name)
    if not channels:
        raise CaseError(f"{label}: channel_names lists no channels")
    return channels


def nnunet_cases(folder: Path, top: Path) -> list[NiftiCase]:
    """nnU-Net v2: `dataset.json`, images `<case>_<XXXX><ending>` in imagesTr/imagesTs, labels `<case><ending>` in labelsTr/labelsTs."""
    label = _relative(folder / "dataset.json", top)
    spec = _read_json(folder / "dataset.json", label)
    if not isinstance(spec, dict) or not isinstance(spec.get("channel_names") or spec.get("modality"), dict):
        raise CaseError(f"{label}: needs 'channel_names' (e.g. {{\"0\": \"CT\"}})")
    channels = _channels(spec.get("channel_names") or spec.get("modality"), label)
    ending = str(spec.get("file_ending") or ".nii.gz")
    labels_spec = spec.get("labels") or {}
    if not isinstance(labels_spec, dict):
        raise CaseError(f"{label}: 'labels' must map label names to integers")
    seg_labels = []
    for name, value in labels_spec.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise CaseError(f"{label}: label {_shown(name)} has value {_shown(value)}; only integer labels (no regions) are supported")
        if not 0 <= value <= MAX_LABEL:
            raise CaseError(f"{label}: label {_shown(name)} has value {_shown(value)}; label values run from 0 to {MAX_LABEL}")
        if value != 0:
            seg_labels.append(SegLabel(value, str(name)))
    dataset_name = str(spec.get("name") or folder.name)
    seg_info = SegInfo(seg_labels, dataset_name, "")
    cases: list[NiftiCase] = []
    pattern = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})" + re.escape(ending) + "$")
    for images_dir, labels_dir in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs")):
        image_folder = folder / images_dir
        if not image_folder.is_dir():
            continue
        found: dict[str, dict[int, Path]] = {}
        for path in sorted(image_folder.iterdir()):
            if not path.is_file() or path.name.startswith("."):
                continue
            match = pattern.match(path.name)
            if not match:
                raise CaseError(f"{_relative(path, top)}: not named <case>_<4-digit channel>{ending}")
            channel = int(match["channel"])
            if channel not in channels:
                raise CaseError(f"{_relative(path, top)}: channel {channel:04d} is not in dataset.json's channel_names")
            found.setdefault(match["case"], {})[channel] = path
        label_files = {p.name[: -len(ending)]: p for p in (folder / labels_dir).glob(f"*{ending}")} if (folder / labels_dir).is_dir() else {}
        for orphan in sorted(set(label_files) - set(found)):
            raise CaseError(f"{_relative(label_files[orphan], top)}: a label without images {orphan}_XXXX{ending}")
        for case_id, by_channel in sorted(found.items()):
            missing = sorted(set(channels) - set(by_channel))
            if missing:
                raise CaseError(f"{images_dir}/{case_id}: channel(s) {missing} missing")
            study_uid = generate_uid(PYDICOM_ROOT_UID, entropy_srcs=[dataset_name, case_id])
            for channel, path in sorted(by_channel.items()):
                modality, description = _channel_modality(channels[channel])
                segmentation = label_files.get(case_id) if channel == 0 else None
                cases.append(NiftiCase(
                    image=path, label=_relative(path, top), case_id=case_id, series_number=channel + 1,
                    tags={"0020|000d": study_uid}, modality=modality, description=description, operator=dataset_name,
                    segmentation=segmentation, seg_info=seg_info if segmentation is not None else None,
                ))
    if not cases:
        raise CaseError(f"{label}: no images in imagesTr/ or imagesTs/")
    return cases
