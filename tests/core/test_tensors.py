from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from impala.core import tensors
from impala.tensor.v1 import tensor_pb2

DTYPES = [np.uint8, np.int8, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_]


@given(
    st.sampled_from(DTYPES).flatmap(
        lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    )
)
def test_round_trip_every_dtype_and_shape(array: np.ndarray) -> None:
    msg = tensors.encode(array)
    wire = tensor_pb2.Tensor.FromString(msg.SerializeToString())
    decoded = tensors.decode(wire)
    assert decoded.dtype == array.dtype
    assert decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)


def test_decode_is_zero_copy_and_read_only() -> None:
    msg = tensors.encode(np.arange(6, dtype=np.float32).reshape(2, 3))
    view = tensors.decode(msg)
    assert not view.flags.writeable
    assert not view.flags.owndata


def test_big_endian_input_is_written_little_endian() -> None:
    msg = tensors.encode(np.array([1, 2], dtype=">i4"))
    assert msg.data == b"\x01\x00\x00\x00\x02\x00\x00\x00"


def test_length_mismatch_names_both_numbers() -> None:
    msg = tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_FLOAT32, shape=[2, 3], data=b"\x00" * 20)
    with pytest.raises(
        tensors.TensorError, match=r"obs: data has 20 bytes but shape \[2, 3\] of float32 needs 24 bytes"
    ):
        tensors.decode(msg, name="obs")


def test_unspecified_and_unknown_dtype_refused() -> None:
    with pytest.raises(tensors.TensorError, match="DTYPE_UNSPECIFIED"):
        tensors.decode(tensor_pb2.Tensor(shape=[1], data=b"\x00"))
    msg = tensor_pb2.Tensor.FromString(b"\x08\x63")  # dtype = 99, an enum value this build does not know
    with pytest.raises(tensors.TensorError, match="DType\\(99\\)"):
        tensors.decode(msg)


def test_expected_dtype_and_shape_are_checked() -> None:
    msg = tensors.encode(np.zeros((4, 3), dtype=np.float32))
    assert tensors.decode(msg, dtype=np.float32, shape=(-1, 3)).shape == (4, 3)
    with pytest.raises(tensors.TensorError, match=r"shape is \[4, 3\], expected \[4, 2\]"):
        tensors.decode(msg, shape=(4, 2))
    with pytest.raises(tensors.TensorError, match="dtype is float32, expected uint8"):
        tensors.decode(msg, dtype=np.uint8)


def test_unsupported_numpy_dtype() -> None:
    with pytest.raises(tensors.TensorError, match="complex128"):
        tensors.encode(np.zeros(2, dtype=np.complex128))
