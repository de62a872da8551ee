"""state_dict <-> Weights payload (impala.core.state_codec), and the weight service stays torch-free."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from impala.core.state_codec import decode_state, encode_state
from impala.core.tensors import TensorError
from impala.weights.v1 import weights_pb2


def test_round_trip_keeps_names_dtypes_shapes_and_values() -> None:
    torch.manual_seed(0)
    state = {
        "torso.0.weight": torch.randn(16, 4),
        "torso.0.bias": torch.randn(16).t(),
        "transposed": torch.randn(3, 5).t(),  # non-contiguous
        "steps": torch.tensor(7, dtype=torch.int64),
        "mask": torch.tensor([True, False]),
        "half": torch.randn(2, 2).half(),
    }
    decoded = decode_state(encode_state(state))
    assert list(decoded) == list(state)
    for name, tensor in state.items():
        assert decoded[name].dtype == tensor.dtype
        assert torch.equal(decoded[name], tensor), name
    decoded["torso.0.bias"].add_(1)  # writable, owned memory


def test_loads_into_a_module() -> None:
    source, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    target.load_state_dict(decode_state(encode_state(source.state_dict())))
    assert torch.equal(target.weight, source.weight)


def test_refusals() -> None:
    with pytest.raises(TensorError, match="bfloat16"):
        encode_state({"w": torch.zeros(2, dtype=torch.bfloat16)})
    twice = weights_pb2.Weights.FromString(encode_state({"w": torch.zeros(2)}) * 2)
    with pytest.raises(TensorError, match="duplicate"):
        decode_state(twice.SerializeToString())


def test_weight_service_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "import impala.weights.main, impala.weights.publisher, impala.weights.subscriber, impala.buffer.consumer,"
        " impala.buffer.producer\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
