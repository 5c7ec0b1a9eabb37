"""The fast DICOM path gives exactly what pydicom gives, and falls back when it must."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage, generate_uid

from harness.data.volume import _header, _uncompressed_pixels, decode_dicom


def _slice_bytes(pixels: np.ndarray, *, syntax=ExplicitVRLittleEndian, bits_stored=None,
                 slope="1", z=0.0) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    ds.RescaleSlope, ds.RescaleIntercept = slope, "0"
    ds.ImagePositionPatient = [0, 0, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.InstanceNumber = 1
    big = syntax == ExplicitVRBigEndian
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder(">" if big else "<")).tobytes()
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True, little_endian=not big, implicit_vr=syntax == ImplicitVRLittleEndian)
    return buf.getvalue()


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.uint8])
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_fast_path_equals_pydicom(dtype, syntax):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype)
    px = rng.integers(max(info.min, -3000), min(info.max, 3000), size=(7, 5)).astype(dtype)
    ds = pydicom.dcmread(BytesIO(_slice_bytes(px, syntax=syntax)))
    fast = _uncompressed_pixels(ds, _header(ds))
    assert fast is not None
    np.testing.assert_array_equal(fast, ds.pixel_array)


def test_signed_with_fewer_stored_bits_and_big_endian_go_through_pydicom():
    px = np.array([[-5, 3], [100, -2000]], dtype=np.int16)
    ds = pydicom.dcmread(BytesIO(_slice_bytes(px, bits_stored=12)))
    assert _uncompressed_pixels(ds, _header(ds)) is None
    big = pydicom.dcmread(BytesIO(_slice_bytes(px, syntax=ExplicitVRBigEndian)))
    assert _uncompressed_pixels(big, _header(big)) is None
    vol = decode_dicom([_slice_bytes(px, syntax=ExplicitVRBigEndian)]).array
    np.testing.assert_array_equal(vol[0], px.astype(np.float32))


def test_rescale_and_order_from_raw_header_values():
    slices = [_slice_bytes(np.full((3, 3), v, np.uint16), slope="0.5", z=z) for v, z in ((10, 2.0), (20, 1.0), (30, 3.0))]
    vol = decode_dicom(slices).array
    np.testing.assert_allclose(vol[:, 0, 0], [10.0, 5.0, 15.0])  # ordered by z: 1, 2, 3 mm
