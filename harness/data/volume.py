"""Decode one image series (DICOM slices or a NIfTI file) into a (z, y, x) float32 volume.

Decoding works on bytes already in memory: the cache reads each file exactly once,
hashes the bytes for the content key and only then parses them, so a series is never
read twice. Bad slices are skipped and reported; a series that cannot form a volume is
rejected with :class:`SeriesError`.

Orientation: DICOM slices keep their stored row/column order (row 0 anterior, column 0
patient right for axial IOP (1,0,0,0,1,0)) and are stacked inferior to superior; NIfTI
volumes are reoriented to LPS before transposing, which gives the same convention.
"""

from __future__ import annotations

import gzip
import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import BytesIO

import numpy as np

from harness.data.cohort import Problem
from harness.errors import HarnessError

#: Bumped whenever decoding changes what arrays come out, so old cache entries are ignored.
DECODER_VERSION = "2"  # 2: spacing inconsistencies reported


class SeriesError(HarnessError):
    """A series that yielded no usable volume; ``problems`` say which file and why."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems: list[Problem] = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems) or "unusable series")


@dataclass(eq=False)
class Volume:
    """A decoded volume: ``array`` is (z, y, x) float32, ``spacing`` (dz, dy, dx) in mm.

    ``content_key`` identifies the array (file contents + preprocessing); ``problems``
    lists slices that were skipped while building it (empty when all were fine).
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    content_key: str
    problems: tuple[Problem, ...] = field(default=())


@dataclass
class Decoded:
    """What a decoder returns: the array or None, plus problems keyed by file index."""

    array: np.ndarray | None
    spacing: tuple[float, float, float]
    #: (index into the file list or None for the whole series, reason)
    problems: list[tuple[int | None, str]]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def series_digest(file_digests: Sequence[str]) -> str:
    """Digest of a series' content: order-free over its files' digests."""
    h = hashlib.sha256()
    for d in sorted(file_digests):
        h.update(d.encode())
        h.update(b"\n")
    return h.hexdigest()


# --------------------------------------------------------------------------- DICOM


def _floats(value: object, n: int) -> np.ndarray | None:
    try:
        out = np.asarray([float(v) for v in value], dtype=float)  # type: ignore[attr-defined, type-var, union-attr]
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) and np.all(np.isfinite(out)) else None


def _truncation(ds) -> str | None:
    """A message when the file ends inside its last element, else None.

    pydicom reads a truncated file without complaint, keeping a short raw value for the
    element it was reading; that short value is the tell-tale.
    """
    keys = list(ds.keys())
    if not keys:
        return None
    raw = ds.get_item(keys[-1])
    value, length = getattr(raw, "value", None), getattr(raw, "length", None)
    if isinstance(value, bytes) and isinstance(length, int) and length != 0xFFFFFFFF \
            and len(value) < length:
        return (f"file is truncated: element {keys[-1]} has {len(value)} of "
                f"{length} bytes")
    return None


_NATIVE_DTYPES = {(8, 0): np.uint8, (8, 1): np.int8, (16, 0): "<u2", (16, 1): "<i2",
                  (32, 0): "<u4", (32, 1): "<i4"}

#: Header fields decode_dicom needs, with their tag and value representation.
_HEADER_TAGS: dict[str, tuple[int, str]] = {
    "Rows": (0x00280010, "US"),
    "Columns": (0x00280011, "US"),
    "BitsAllocated": (0x00280100, "US"),
    "BitsStored": (0x00280101, "US"),
    "PixelRepresentation": (0x00280103, "US"),
    "SamplesPerPixel": (0x00280002, "US"),
    "NumberOfFrames": (0x00280008, "IS"),
    "RescaleSlope": (0x00281053, "DS"),
    "RescaleIntercept": (0x00281052, "DS"),
    "ImagePositionPatient": (0x00200032, "DS"),
    "ImageOrientationPatient": (0x00200037, "DS"),
    "InstanceNumber": (0x00200013, "IS"),
}


def _header(ds) -> dict[str, object]:
    """The few header values decoding needs, read from the raw bytes when possible.

    Why: each ``ds.Attribute`` access converts a raw element through pydicom's general
    machinery, which for a small MR slice costs as much as decoding its pixels. For a
    little-endian file the values are parsed here directly (US as 2-byte ints, IS/DS as
    backslash-separated text); anything else goes through pydicom.
    """
    from pydicom.dataelem import RawDataElement

    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    little = syntax is not None and syntax.is_little_endian
    out: dict[str, object] = {}
    for name, (tag, vr) in _HEADER_TAGS.items():
        elem = ds.get_item(tag)
        if elem is None:
            continue
        if little and isinstance(elem, RawDataElement) and isinstance(elem.value, bytes):
            raw = elem.value
            if vr == "US":
                if len(raw) < 2:
                    continue
                out[name] = int.from_bytes(raw[:2], "little")
            else:
                parts = raw.decode("ascii", "replace").strip(" \x00").split("\\")
                out[name] = parts if len(parts) > 1 else parts[0]
        else:
            value = ds.get(name)
            if value is not None:
                out[name] = list(value) if vr == "DS" and not isinstance(value, (str, float, int)) else value
    return out


def _uncompressed_pixels(ds, hdr: dict[str, object]) -> np.ndarray | None:
    """Pixels of a plain little-endian, single-sample slice straight from its bytes.

    Why: ``Dataset.pixel_array`` is general (any codec, any layout) and its bookkeeping
    costs more than the decode itself for the common uncompressed MR slice. Anything
    unusual (compressed, big-endian, colour, sign bits to extend, short data) returns
    None and goes through pydicom.
    """
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or syntax.is_compressed or not syntax.is_little_endian:
        return None
    try:
        rows, cols = int(hdr["Rows"]), int(hdr["Columns"])  # type: ignore[arg-type, call-overload]
        bits = int(hdr["BitsAllocated"])  # type: ignore[arg-type, call-overload]
        stored = int(hdr.get("BitsStored", bits))  # type: ignore[arg-type, call-overload]
        signed = int(hdr["PixelRepresentation"])  # type: ignore[arg-type, call-overload]
        samples = int(hdr.get("SamplesPerPixel", 1))  # type: ignore[arg-type, call-overload]
        frames = int(hdr.get("NumberOfFrames", 1) or 1)  # type: ignore[arg-type, call-overload]
    except (KeyError, TypeError, ValueError):
        return None
    dtype = _NATIVE_DTYPES.get((bits, signed))
    if dtype is None or samples != 1 or frames != 1 or (signed and stored != bits):
        return None
    data = ds.PixelData
    if len(data) < rows * cols * (bits // 8):
        return None  # let pydicom say what is wrong
    return np.frombuffer(data, dtype=dtype, count=rows * cols).reshape(rows, cols)  # type: ignore[call-overload]


def decode_dicom(blobs: Sequence[bytes], names: Sequence[str] | None = None) -> Decoded:
    """Decode the slices of one series from their bytes.

    Slices are ordered by ImagePositionPatient projected on the slice normal (from
    ImageOrientationPatient) when every usable slice has one, else by InstanceNumber,
    else by file name. Files that are not DICOM, lack pixel data or are truncated are
    skipped; slices of differing shapes reject the whole series.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    names = list(names) if names is not None else [str(i) for i in range(len(blobs))]
    problems: list[tuple[int | None, str]] = []
    slices: list[tuple[int, np.ndarray, object, dict]] = []  # (file index, pixels, dataset, header)
    for i, data in enumerate(blobs):
        if not data:
            problems.append((i, "empty file"))
            continue
        try:
            ds = pydicom.dcmread(BytesIO(data))
        except InvalidDicomError:
            problems.append((i, "not a DICOM file"))
            continue
        except Exception as exc:  # truncated header, bad element lengths, ...
            problems.append((i, f"unreadable DICOM (truncated or corrupt): {exc}"))
            continue
        cut = _truncation(ds)
        if cut:
            problems.append((i, cut))
            continue
        if "PixelData" not in ds:
            hint = " (file truncated?)" if "Rows" in ds else ""
            problems.append((i, f"DICOM file has no pixel data{hint}"))
            continue
        hdr = _header(ds)
        try:
            px = _uncompressed_pixels(ds, hdr)
            if px is None:
                px = ds.pixel_array
        except Exception as exc:
            problems.append((i, f"pixel data truncated or corrupt: {exc}"))
            continue
        if px.ndim != 2:
            problems.append((i, f"expected one 2-D slice per file, found pixel shape {px.shape}"))
            continue
        slope = float(hdr.get("RescaleSlope", 1.0) or 1.0)  # type: ignore[arg-type]
        intercept = float(hdr.get("RescaleIntercept", 0.0) or 0.0)  # type: ignore[arg-type]
        arr = px.astype(np.float32)
        if slope != 1.0 or intercept != 0.0:
            arr = (arr * np.float32(slope) + np.float32(intercept)).astype(np.float32)
        slices.append((i, arr, ds, hdr))

    if not slices:
        problems.append((None, "no usable DICOM slices in series"))
        return Decoded(None, (1.0, 1.0, 1.0), problems)

    shapes = Counter(a.shape for _, a, *_ in slices)
    if len(shapes) > 1:
        found = ", ".join(f"{r}x{c} ({n} slices)" for (r, c), n in sorted(shapes.items()))
        problems.append((None, f"slices differ in shape: {found}; series rejected"))
        return Decoded(None, (1.0, 1.0, 1.0), problems)

    # Ordering: IPP on the normal, else InstanceNumber, else file name.
    iop = None
    for *_, hdr in slices:
        iop = _floats(hdr.get("ImageOrientationPatient"), 6)
        if iop is not None:
            break
    normal = np.cross(iop[:3], iop[3:]) if iop is not None else np.array([0.0, 0.0, 1.0])
    positions: list[float | None] = []
    for *_, hdr in slices:
        ipp = _floats(hdr.get("ImagePositionPatient"), 3)
        positions.append(float(ipp @ normal) if ipp is not None else None)
    instance: list[int | None] = []
    for *_, hdr in slices:
        try:
            instance.append(int(hdr["InstanceNumber"]))  # type: ignore[arg-type, call-overload]
        except (KeyError, TypeError, ValueError):
            instance.append(None)

    idx = list(range(len(slices)))
    have_pos = all(p is not None for p in positions)
    if have_pos:
        idx.sort(key=lambda k: (positions[k], instance[k] or 0, names[slices[k][0]]))
    elif all(n is not None for n in instance):
        idx.sort(key=lambda k: instance[k] or 0)
    else:
        idx.sort(key=lambda k: names[slices[k][0]])
        if len(slices) > 1:
            problems.append(
                (None, "slices have neither ImagePositionPatient nor InstanceNumber; "
                 "ordered by file name")
            )

    first = slices[idx[0]][2]
    ps = _floats(getattr(first, "PixelSpacing", None), 2)
    dy, dx = (float(ps[0]), float(ps[1])) if ps is not None else (1.0, 1.0)
    for k in idx[1:]:
        other = _floats(getattr(slices[k][2], "PixelSpacing", None), 2)
        if ps is not None and other is not None and not np.allclose(other, ps, rtol=1e-3):
            problems.append((slices[k][0], f"PixelSpacing {other[0]:g}x{other[1]:g} mm differs "
                                           f"from the series' {ps[0]:g}x{ps[1]:g} mm; "
                                           "the first slice's is used"))
    dz = None
    if have_pos and len(idx) > 1:
        z = np.array([positions[k] for k in idx], dtype=float)
        gaps = np.diff(z)
        dz = float(np.median(gaps))
        # Against the smallest gap, not the median: in a short series one missing
        # slice moves the median itself (gaps 2, 4 have median 3).
        gmin, gmax = float(gaps.min()), float(gaps.max())
        if gmin <= 1e-6:
            problems.append((None, "two or more slices share one position (duplicate "
                                   "slices?)"))
        elif gmax > 1.5 * gmin + 1e-6 and abs(gmax / gmin - round(gmax / gmin)) < 0.2:
            problems.append((None, f"uneven slice positions (largest gap {gmax:.2f} mm "
                                   f"vs {gmin:.2f} mm): a slice may be missing"))
        elif gmax - gmin > 0.1 * gmin + 1e-3:
            problems.append((None, f"inconsistent slice spacing (gaps from {gmin:.2f} "
                                   f"to {gmax:.2f} mm); kept with the median {dz:.2f} mm"))
        if dz <= 0:
            dz = None
    if dz is None:
        for attr in ("SpacingBetweenSlices", "SliceThickness"):
            try:
                val = float(getattr(first, attr))
            except (AttributeError, TypeError, ValueError):
                continue
            if val > 0:
                dz = val
                break
    dz = dz or 1.0

    volume = np.stack([slices[k][1] for k in idx]).astype(np.float32, copy=False)
    return Decoded(volume, (dz, dy, dx), problems)


# --------------------------------------------------------------------------- NIfTI


def _nifti_from_bytes(data: bytes):  # -> nibabel image
    import nibabel as nib

    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    errors = []
    for cls in (nib.Nifti1Image, nib.Nifti2Image):
        try:
            return cls.from_bytes(data)
        except Exception as exc:  # wrong sizeof_hdr, truncated, ...
            errors.append(str(exc))
    raise ValueError(errors[0])


def decode_nifti(data: bytes) -> Decoded:
    """Decode a NIfTI file's bytes, reoriented to LPS and transposed to (z, y, x)."""
    import nibabel as nib

    try:
        img = _nifti_from_bytes(data)
        shape = img.shape
    except Exception as exc:
        return Decoded(None, (1.0, 1.0, 1.0), [(0, f"not a readable NIfTI file: {exc}")])
    # Accept trailing singleton dimensions (x, y, z, 1) but nothing else.
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        return Decoded(
            None, (1.0, 1.0, 1.0),
            [(0, f"expected a 3-D volume, found {len(img.shape)} dimensions {tuple(img.shape)}")],
        )
    try:
        arr = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    except Exception as exc:
        return Decoded(None, (1.0, 1.0, 1.0), [(0, f"NIfTI data truncated or corrupt: {exc}")])
    bad = ~np.isfinite(arr)
    if bad.any():
        return Decoded(
            None, (1.0, 1.0, 1.0),
            [(0, f"volume contains {int(bad.sum())} NaN/inf voxels; rejected")],
        )
    affine = img.affine
    current = nib.orientations.io_orientation(affine)
    target = nib.orientations.axcodes2ornt(("L", "P", "S"))
    transform = nib.orientations.ornt_transform(current, target)
    arr = nib.orientations.apply_orientation(arr, transform)
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    # Permute the voxel sizes the same way the axes were permuted.
    lps_zooms = np.empty(3)
    for src_axis, (dst_axis, _flip) in enumerate(transform):
        lps_zooms[int(dst_axis)] = zooms[src_axis]
    out = np.ascontiguousarray(arr.transpose(2, 1, 0), dtype=np.float32)
    spacing = tuple(float(z) if z > 0 else 1.0 for z in lps_zooms[::-1])
    return Decoded(out, spacing, [])  # type: ignore[arg-type]


# --------------------------------------------------------------------------- preprocess

_PREPROCESS_KEYS = frozenset({"in_plane"})


def validate_preprocess(preprocess: dict | None) -> dict:
    """Normalise a preprocess config; unknown keys are an error, not silently ignored."""
    cfg = dict(preprocess or {})
    unknown = set(cfg) - _PREPROCESS_KEYS
    if unknown:
        raise HarnessError(
            f"unknown preprocess option(s) {sorted(unknown)}; known: {sorted(_PREPROCESS_KEYS)}"
        )
    if cfg.get("in_plane") is not None:
        n = cfg["in_plane"]
        if isinstance(n, int) and not isinstance(n, bool):
            n = (n, n)
        try:
            n = tuple(int(v) for v in n)
        except TypeError:
            raise HarnessError(f"preprocess in_plane must be an int or [rows, cols], got {n!r}")
        if len(n) != 2 or min(n) < 1:
            raise HarnessError(f"preprocess in_plane must be positive, got {cfg['in_plane']!r}")
        cfg["in_plane"] = list(n)
    else:
        cfg.pop("in_plane", None)
    return cfg


def apply_preprocess(
    array: np.ndarray, spacing: tuple[float, float, float], cfg: dict, *, is_label: bool
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Apply a validated preprocess config. Label maps use nearest-neighbour resampling."""
    if "in_plane" in cfg:
        from scipy import ndimage

        ny, nx = cfg["in_plane"]
        z, y, x = array.shape
        if (y, x) != (ny, nx):
            zoom = (1.0, ny / y, nx / x)
            array = ndimage.zoom(array, zoom, order=0 if is_label else 1, grid_mode=False)
            array = array[:, :ny, :nx]  # guard against rounding in zoom's output shape
            spacing = (spacing[0], spacing[1] * y / ny, spacing[2] * x / nx)
    return np.ascontiguousarray(array, dtype=np.float32), spacing
