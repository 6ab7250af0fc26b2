"""Arrays inside records: raw little-endian bytes + dtype + shape (formats/README.md, "Arrays").

In msgpack an array is a map with exactly the three keys ``nd`` (numpy dtype
string, always little-endian or byte-sized, e.g. ``"<f2"``), ``shape`` (list of
ints) and ``data`` (bin, C order). Readers get a read-only ``numpy.frombuffer``
view of the unpacked bytes: no copy, no pickle.

In JSON lines the same array is ``{"nd": ..., "shape": [...], "values": nested lists}``.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import FormatError

#: dtypes a stream may carry, as numpy dtype strings (little-endian where it matters).
SUPPORTED_DTYPES = (
    "|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8",
)
_SUPPORTED = frozenset(SUPPORTED_DTYPES)
ARRAY_KEYS = frozenset(("nd", "shape", "data"))
JSON_ARRAY_KEYS = frozenset(("nd", "shape", "values"))


def _dtype_string(dtype: np.dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype.byteorder == ">" or (dtype.byteorder == "=" and np.little_endian is False):
        dtype = dtype.newbyteorder("<")
    text = dtype.str
    if text not in _SUPPORTED:
        raise FormatError(f"unsupported array dtype {dtype} (supported: {', '.join(SUPPORTED_DTYPES)})")
    return text


def _little_endian_c_order(array) -> tuple[str, np.ndarray]:
    array = np.asarray(array)
    dtype = _dtype_string(array.dtype)
    # np.asarray, not np.ascontiguousarray: the latter turns a 0-d array into shape (1,)
    return dtype, np.asarray(array, dtype=np.dtype(dtype), order="C")


def encode_array(array: np.ndarray) -> dict:
    """numpy array -> the msgpack map form (``nd``, ``shape``, ``data`` as bytes)."""
    dtype, contiguous = _little_endian_c_order(array)
    return {"nd": dtype, "shape": list(contiguous.shape), "data": contiguous.tobytes()}


def _encode_array_view(array: np.ndarray) -> dict:
    """Like :func:`encode_array` but ``data`` is a memoryview: msgpack packs it without a copy."""
    dtype, contiguous = _little_endian_c_order(array)
    return {"nd": dtype, "shape": list(contiguous.shape), "data": memoryview(contiguous.reshape(-1).view(np.uint8))}


def encode_array_json(array: np.ndarray) -> dict:
    """numpy array -> the JSON-lines form (``nd``, ``shape``, ``values``)."""
    dtype, contiguous = _little_endian_c_order(array)
    return {"nd": dtype, "shape": list(contiguous.shape), "values": contiguous.tolist()}


def _checked_dtype_shape(obj: dict) -> tuple[np.dtype, tuple[int, ...]]:
    dtype = obj["nd"]
    if not isinstance(dtype, str) or dtype not in _SUPPORTED:
        raise FormatError(f"unsupported array dtype {dtype!r} (supported: {', '.join(SUPPORTED_DTYPES)})")
    shape = obj["shape"]
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                              for s in shape):
        raise FormatError(f"bad array shape {shape!r}: a list of non-negative integers")
    return np.dtype(dtype), tuple(shape)


def decode_array(obj: dict) -> np.ndarray:
    """The msgpack map form -> read-only numpy view of its bytes (zero-copy)."""
    dtype, shape = _checked_dtype_shape(obj)
    data = obj["data"]
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError("array data must be msgpack bin")
    expected = dtype.itemsize * math.prod(shape)
    if len(data) != expected:
        raise FormatError(f"array of shape {list(shape)} {obj['nd']} needs {expected} bytes, has {len(data)}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def decode_array_json(obj: dict) -> np.ndarray:
    dtype, shape = _checked_dtype_shape(obj)
    try:
        array = np.asarray(obj["values"], dtype=dtype)
        if array.size != math.prod(shape):
            raise ValueError(f"{array.size} values")
        return array.reshape(shape)
    except (ValueError, TypeError, OverflowError) as error:
        raise FormatError(f"bad JSON array values for shape {list(shape)}: {error}") from None


def msgpack_object_hook(obj: dict):
    if len(obj) == 3 and ARRAY_KEYS.issuperset(obj.keys()):
        return decode_array(obj)
    return obj


def json_object_hook(obj: dict):
    if len(obj) == 3 and JSON_ARRAY_KEYS.issuperset(obj.keys()):
        return decode_array_json(obj)
    return obj


def msgpack_default(value):
    """msgpack ``default=``: arrays and numpy scalars; anything else is refused."""
    if isinstance(value, np.ndarray):
        return _encode_array_view(value)
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "__fspath__"):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} in a stream record")


def json_default(value):
    if isinstance(value, np.ndarray):
        return encode_array_json(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise FormatError("a bin value outside an array cannot be written as JSON lines "
                          "(formats/README.md, \"Records\"); wrap it in a numpy uint8 array")
    if hasattr(value, "__fspath__"):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} in a stream record")
