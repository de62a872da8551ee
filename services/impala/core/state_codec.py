"""A torch ``state_dict`` <-> serialized ``impala.weights.v1.Weights`` (the weight service's payload).

Lives apart from ``impala.core.tensors`` because it imports torch: the weight service only relays
these bytes and must never load this module.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from impala.core import tensors
from impala.weights.v1 import weights_pb2


def encode_state(state_dict: Mapping[str, torch.Tensor]) -> bytes:
    """Serialize every tensor (moved to CPU, in the dict's order); raises ``TensorError`` for dtypes
    without a wire type (bfloat16, complex)."""
    message = weights_pb2.Weights()
    for name, tensor in state_dict.items():
        entry = message.tensors.add(name=name)
        try:
            array = tensor.detach().cpu().numpy()
        except TypeError as exc:  # numpy has no bfloat16
            raise tensors.TensorError(f"{name}: dtype {tensor.dtype} has no wire DType") from exc
        tensors.encode(array, out=entry.tensor)
    return message.SerializeToString()


def decode_state(payload: bytes) -> dict[str, torch.Tensor]:
    """The state dict of a serialized Weights message (each tensor a fresh, writable CPU copy);
    raises ``TensorError`` for malformed tensors or duplicate names."""
    message = weights_pb2.Weights.FromString(payload)
    out: dict[str, torch.Tensor] = {}
    for entry in message.tensors:
        if entry.name in out:
            raise tensors.TensorError(f"duplicate tensor name {entry.name!r}")
        array = tensors.decode(entry.tensor, name=entry.name)
        # The decoded array is a read-only view of the message; torch needs writable memory it owns.
        out[entry.name] = torch.from_numpy(np.array(array, copy=True))
    return out
