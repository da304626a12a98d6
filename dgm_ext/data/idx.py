"""Reader and writer for the IDX binary format used by MNIST and Fashion-MNIST.

Layout (big-endian): two zero bytes, one dtype code byte, one byte with the number of
dimensions ``ndim``, ``ndim`` unsigned 32-bit sizes, then the row-major data. MNIST image
files have magic ``2051`` (uint8, 3 dims), label files ``2049`` (uint8, 1 dim).
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

__all__ = ["IDXFormatError", "decode_idx", "read_idx", "write_idx"]

# dtype code -> big-endian numpy dtype
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in _IDX_DTYPES.items()}


class IDXFormatError(ValueError):
    """An IDX file is corrupt: bad magic number, unknown dtype or wrong size."""


def decode_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode the (uncompressed) bytes of an IDX file into a read-only numpy array.

    ``name`` is only used in error messages. Raises :class:`IDXFormatError` when the magic
    number, dtype code or the payload size does not match the header.
    """
    if len(data) < 4:
        raise IDXFormatError(f"{name}: IDX file too short ({len(data)} bytes) to hold a header")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    magic = struct.unpack(">I", data[:4])[0]
    if zero != 0 or code not in _IDX_DTYPES or ndim == 0:
        raise IDXFormatError(
            f"{name}: bad IDX magic number {magic} (0x{magic:08x}); expected two zero bytes, "
            f"a dtype code in {sorted(_IDX_DTYPES)} and ndim >= 1 (MNIST uses 2051 and 2049)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXFormatError(f"{name}: truncated IDX header (magic {magic}, {ndim} dims)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header
    if actual != expected:
        raise IDXFormatError(
            f"{name}: IDX payload has {actual} bytes but the header (magic {magic}, "
            f"dims {dims}) requires {expected}; the file is truncated or corrupt"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed when the name ends in ``.gz``) into a numpy array."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise IDXFormatError(f"{path}: cannot read IDX file: {exc}") from exc
    return decode_idx(data, str(path))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when the name ends in ``.gz``)."""
    array = np.ascontiguousarray(array)
    key = array.dtype.newbyteorder("=")
    if key not in _CODES:
        raise ValueError(f"array: dtype {array.dtype} has no IDX code")
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"array: IDX needs 1..255 dimensions, got {array.ndim}")
    code = _CODES[key]
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(_IDX_DTYPES[code], copy=False).tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.open(path, "wb", compresslevel=6) as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
