"""Codec between numpy arrays and ``impala.tensor.v1.Tensor`` messages.

Decoding is zero-copy: the array is a read-only view over the message's bytes (``numpy.frombuffer``).
This module is torch-free so that the control API and weight service images can use it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from impala.tensor.v1 import tensor_pb2

DType = tensor_pb2.DType

_TO_NUMPY: dict[int, np.dtype[np.generic]] = {
    tensor_pb2.DTYPE_UINT8: np.dtype("<u1"),
    tensor_pb2.DTYPE_INT8: np.dtype("<i1"),
    tensor_pb2.DTYPE_INT32: np.dtype("<i4"),
    tensor_pb2.DTYPE_INT64: np.dtype("<i8"),
    tensor_pb2.DTYPE_FLOAT16: np.dtype("<f2"),
    tensor_pb2.DTYPE_FLOAT32: np.dtype("<f4"),
    tensor_pb2.DTYPE_FLOAT64: np.dtype("<f8"),
    tensor_pb2.DTYPE_BOOL: np.dtype("bool"),
}
_NATIVE: dict[int, np.dtype[np.generic]] = {k: v.newbyteorder("=") for k, v in _TO_NUMPY.items()}
_FROM_NUMPY: dict[np.dtype[np.generic], int] = {v: k for k, v in _NATIVE.items()}


class TensorError(ValueError):
    """A tensor message that cannot be decoded or does not match what was expected."""


def numpy_dtype(dtype: int) -> np.dtype[np.generic]:
    """The numpy dtype of a wire ``DType``; raises ``TensorError`` for unknown or unspecified values."""
    try:
        return _TO_NUMPY[dtype]
    except KeyError:
        raise TensorError(f"unsupported dtype {_dtype_name(dtype)}") from None


def wire_dtype(dtype: npt.DTypeLike) -> int:
    """The wire ``DType`` of a numpy dtype; raises ``TensorError`` when it has none."""
    np_dtype = np.dtype(dtype).newbyteorder("=")
    try:
        return _FROM_NUMPY[np_dtype]
    except KeyError:
        raise TensorError(f"numpy dtype {np.dtype(dtype)} has no wire DType") from None


def _dtype_name(dtype: int) -> str:
    if dtype in _TO_NUMPY:
        return str(_TO_NUMPY[dtype].newbyteorder("="))
    if dtype in DType.values():
        return DType.Name(dtype)  # type: ignore[arg-type]
    return f"DType({dtype})"


def encode(array: npt.ArrayLike, out: tensor_pb2.Tensor | None = None) -> tensor_pb2.Tensor:
    """Encode an array as a Tensor (one copy into the message's bytes, little-endian C order)."""
    arr = np.asarray(array)
    wire = wire_dtype(arr.dtype)
    little = arr.astype(_TO_NUMPY[wire], copy=False)
    msg = out if out is not None else tensor_pb2.Tensor()
    msg.dtype = wire  # type: ignore[assignment]
    del msg.shape[:]
    msg.shape.extend(little.shape)
    msg.data = np.ascontiguousarray(little).tobytes()
    return msg


def decode(
    msg: tensor_pb2.Tensor,
    *,
    name: str = "tensor",
    dtype: npt.DTypeLike | None = None,
    shape: Sequence[int] | None = None,
) -> npt.NDArray[np.generic]:
    """Decode a Tensor into a read-only numpy view of its bytes (zero copy).

    ``dtype`` and ``shape`` (``-1`` matches any size in that dimension) check what the caller expects;
    any mismatch raises ``TensorError`` naming ``name`` and both values.
    """
    np_dtype = numpy_dtype(msg.dtype)
    if dtype is not None and _native(dtype) != _NATIVE[msg.dtype]:
        raise TensorError(f"{name}: dtype is {_dtype_name(msg.dtype)}, expected {np.dtype(dtype)}")
    dims = tuple(msg.shape)
    if dims and min(dims) < 0:
        raise TensorError(f"{name}: negative dimension in shape {list(dims)}")
    if shape is not None and not _shape_matches(shape, dims):
        raise TensorError(f"{name}: shape is {list(dims)}, expected {list(shape)}")
    expected = math.prod(dims) * np_dtype.itemsize
    data = msg.data  # read once: with upb every access of a bytes field copies it
    if len(data) != expected:
        raise TensorError(
            f"{name}: data has {len(data)} bytes but shape {list(dims)} of {_dtype_name(msg.dtype)} "
            f"needs {expected} bytes"
        )
    return np.frombuffer(data, dtype=np_dtype).reshape(dims)


def _shape_matches(want: Sequence[int], got: tuple[int, ...]) -> bool:
    return len(want) == len(got) and all(w == g or w == -1 for w, g in zip(want, got, strict=True))


def _native(dtype: npt.DTypeLike) -> np.dtype[np.generic]:
    """``dtype`` in native byte order (cached: ``decode`` runs per field of every message)."""
    try:
        return _native_cached(dtype)  # type: ignore[arg-type]
    except TypeError:  # unhashable, e.g. a structured dtype given as a list
        return np.dtype(dtype).newbyteorder("=")


@functools.lru_cache(maxsize=64)
def _native_cached(dtype: npt.DTypeLike) -> np.dtype[np.generic]:
    return np.dtype(dtype).newbyteorder("=")


def spec(dtype: npt.DTypeLike, shape: Sequence[int]) -> tensor_pb2.TensorSpec:
    """A TensorSpec message for a numpy dtype and shape."""
    return tensor_pb2.TensorSpec(dtype=wire_dtype(dtype), shape=list(shape))  # type: ignore[arg-type]
