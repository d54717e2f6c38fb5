"""A large multi-frame DICOM file written in chunks, never held in memory (for receiver and retrieval tests).

Multi-frame Grayscale Word Secondary Capture, 16-bit, Explicit VR Little Endian: each frame's
pixels are its frame number (mod 65536) plus the column, so any frame read back can be checked.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MULTIFRAME_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"


def frame_pixels(number: int, rows: int, columns: int) -> np.ndarray:
    """The pixels of frame `number` (1-based), as written."""
    row = (np.arange(columns, dtype=np.uint32) + number) % 65536
    return np.broadcast_to(row.astype(np.uint16), (rows, columns))


def write_large_multiframe(path: Path, frames: int, rows: int = 512, columns: int = 512, patient_id: str = "LARGE") -> Dataset:
    """Write the file; returns its header (without pixel data)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MULTIFRAME_WORD_SC
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MULTIFRAME_WORD_SC
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = "Large^Object"
    ds.Modality = "OT"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.StudyDate = "20260101"
    ds.SeriesDescription = f"{frames} frames of {rows}x{columns}"
    ds.ConversionType = "WSD"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.save_as(path, enforce_file_format=True)
    size = frames * rows * columns * 2
    with open(path, "ab") as out:
        out.write(struct.pack("<HH", 0x7FE0, 0x0010) + b"OW\x00\x00" + struct.pack("<L", size))
        for number in range(1, frames + 1):
            out.write(frame_pixels(number, rows, columns).tobytes())
    return ds
