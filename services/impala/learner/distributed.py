"""N learner ranks as one learner, on ``torch.distributed`` (docs/adr/0022-learner-ranks.md).

A rank learns from its own share of each global batch (B / WORLD_SIZE rollouts, read under its own
consumer name) and every rank takes the same optimizer step: the gradients are all-reduced between
``backward()`` and the grad-norm clip (``impala.core.learn.GradientReducer``). Each loop turn starts
with one small all-reduce, the *agreement*, which decides for every rank at once

- whether to stop (any rank asked: a SIGTERM to one pod stops the world in order),
- whether the run is paused (rank 0 reads the flag from Redis: pause reaches every rank on the same turn),
- whether every rank holds a batch (else nobody steps, and whoever holds one keeps it),
- rank 0's policy version, and the global batch's valid steps and completed episodes, so the counters
  and the learning-rate schedule count global steps exactly.

Because the ranks meet every turn, starved or paused too, a collective only waits long when a rank is
gone: a dead peer breaks the connection at once, a hung one trips ``dist_timeout_s``. Either way the
collective raises, the rank turns that into ``RankLostError``, rank 0 writes a checkpoint of the last
completed step, and every rank exits non-zero for its supervisor to restart the world.

The world comes from the variables ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``, ``LOCAL_RANK``); without ``WORLD_SIZE`` (or with 1) the learner is alone and no
process group is made (``Solo``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch._dynamo  # before any process group: see the note below
import torch.distributed as dist
from torch import Tensor

from impala.core.learn import GradientReducer

log = logging.getLogger(__name__)

# torch._dynamo, imported lazily by the first ``optimizer.step()``, keeps a reference to the process
# group that exists when it is first imported: ``destroy_process_group`` then leaves the gloo threads
# (and rank 0's store thread) running, and the interpreter's teardown destroys them still joinable
# ("terminate called without an active exception", SIGABRT at exit; 1 exit in 16 under load). Imported
# before the group exists, it holds none and the group's threads end at ``destroy_process_group``.

EPISODE_SLOTS = 128  # returns per rank and turn that reach rank 0's window; beyond, only the count
_CONTROL = 5  # stop, paused, not ready, policy version, valid steps
_LEAVE_WAIT_S = 10.0  # how long rank 0 keeps the store up for the other ranks to leave


class WorldError(ValueError):
    """The torchrun variables describe no possible world; the message names the variable."""


class RankLostError(RuntimeError):
    """A collective failed or timed out: another rank died or hangs. Restart the world."""


@dataclass(frozen=True)
class World:
    """This process's place among the learner ranks."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @property
    def primary(self) -> bool:
        """Rank 0 publishes weights, writes checkpoints and the status hash, reads the pause flag."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> World:
        """The world of the torchrun variables; alone when ``WORLD_SIZE`` is unset or 1."""
        env = os.environ if environ is None else environ
        size = _int(env, "WORLD_SIZE", 1)
        if size < 1:
            raise WorldError(f"WORLD_SIZE must be >= 1, got {size}")
        if size == 1:
            return cls()
        missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not env.get(name)]
        if missing:
            raise WorldError(f"WORLD_SIZE={size} needs {', '.join(missing)} (as torchrun sets them)")
        rank, port = _int(env, "RANK", 0), _int(env, "MASTER_PORT", 0)
        if not 0 <= rank < size:
            raise WorldError(f"RANK must be in [0, {size}), got {rank}")
        if not 0 < port < 65536:
            raise WorldError(f"MASTER_PORT must be a TCP port, got {port}")
        return cls(rank, size, _int(env, "LOCAL_RANK", 0), env["MASTER_ADDR"], port)


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise WorldError(f"{name} must be an integer, got {raw!r}") from None


@dataclass(frozen=True)
class Turn:
    """What the ranks agreed on for one loop turn.

    ``steps`` and ``returns`` describe the global batch (all ranks' held batches) and only mean
    something when ``ready``; ``episodes`` counts its completed episodes even beyond the returns kept.
    """

    stop: bool
    paused: bool
    ready: bool
    version: int
    steps: int = 0
    episodes: int = 0
    returns: tuple[float, ...] = ()


class Solo:
    """The learner alone: every agreement is its own opinion, and gradients stay as they are."""

    world = World()

    def agree(self, *, stop: bool, paused: bool, version: int, held: Held | None) -> Turn:
        returns = tuple(held.returns) if held else ()
        steps = held.steps if held else 0
        return Turn(stop, paused, held is not None, version, steps, len(returns), returns)

    def reducer(self, turn: Turn) -> GradientReducer | None:
        return None

    def share_state(self, payload: dict[str, Any] | None) -> dict[str, Any] | None:
        return payload

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Held:
    """A rank's batch as the agreement sees it: its valid steps and the returns of its episodes."""

    steps: int
    returns: Sequence[float]


class RankGroup:
    """This rank's membership of the world; every method is a collective all ranks call in turn.

    Args:
        world: this rank and the rendezvous address.
        device: where gradients live (NCCL reduces on the GPU).
    """

    def __init__(self, world: World, device: torch.device, store: Any = None) -> None:
        self.world, self.device = world, device
        self._store = store  # the rendezvous store (rank 0 hosts it): kept until every rank has left

    @classmethod
    def join(
        cls, world: World, *, backend: str, device: torch.device, timeout_s: float, rendezvous_timeout_s: float
    ) -> RankGroup:
        """Rendezvous at ``MASTER_ADDR:MASTER_PORT`` (rank 0 hosts the store) and make the process group.

        ``rendezvous_timeout_s`` bounds the wait for all ranks to arrive (pods are scheduled one by
        one); ``timeout_s`` bounds every collective after that.
        """
        log.info(
            "joining learner ranks",
            extra={"rank": world.rank, "world_size": world.size, "master": f"{world.master_addr}:{world.master_port}"},
        )
        # Under torchrun its agent already hosts the store at MASTER_PORT: every rank is a client then.
        hosts_store = world.primary and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"
        try:
            store = dist.TCPStore(  # type: ignore[attr-defined]
                world.master_addr,
                world.master_port,
                world.size,
                is_master=hosts_store,
                timeout=timedelta(seconds=rendezvous_timeout_s),
                wait_for_workers=True,
            )
            dist.init_process_group(
                backend,
                store=store,
                rank=world.rank,
                world_size=world.size,
                timeout=timedelta(seconds=timeout_s),
            )
        except RuntimeError as err:
            raise RankLostError(f"rendezvous of {world.size} learner ranks failed: {err}") from err
        log.info("learner ranks joined", extra={"rank": world.rank, "world_size": world.size, "backend": backend})
        return cls(world, device, store)

    def agree(self, *, stop: bool, paused: bool, version: int, held: Held | None) -> Turn:
        """One all-reduce (sum) of everyone's turn: flags, rank 0's pause and version, the batches."""
        size, primary = self.world.size, self.world.primary
        vector = torch.zeros(_CONTROL + size * (EPISODE_SLOTS + 1), dtype=torch.float64)
        vector[0] = float(stop)
        vector[1] = float(paused and primary)
        vector[2] = float(held is None)
        vector[3] = float(version if primary else 0)
        if held is not None:
            vector[4] = float(held.steps)
            slot = _CONTROL + self.world.rank * (EPISODE_SLOTS + 1)
            kept = list(held.returns)[:EPISODE_SLOTS]
            vector[slot] = float(len(held.returns))
            vector[slot + 1 : slot + 1 + len(kept)] = torch.tensor(kept, dtype=torch.float64)
        summed = self._all_reduce(vector, "agreement").tolist()
        episodes, returns = 0, []
        for r in range(size):
            slot = _CONTROL + r * (EPISODE_SLOTS + 1)
            count = int(summed[slot])
            episodes += count
            returns += summed[slot + 1 : slot + 1 + min(count, EPISODE_SLOTS)]
        return Turn(
            stop=summed[0] > 0,
            paused=summed[1] > 0,
            ready=summed[2] == 0,
            version=int(summed[3]),
            steps=int(summed[4]),
            episodes=episodes,
            returns=tuple(returns),
        )

    def reducer(self, turn: Turn) -> GradientReducer:
        """The gradient all-reduce of the step ``turn`` agreed on (it knows the global valid steps)."""

        def reduce_gradients(parameters: Sequence[Tensor], valid_steps: int, *, mean: bool) -> int:
            grads = [_grad(p) for p in parameters]
            flat = torch.cat([g.reshape(-1) for g in grads])
            if mean:  # Σ_r (n_r / N) · g_r: the mean over the global batch's N valid steps
                flat.mul_(valid_steps / max(turn.steps, 1))
            self._all_reduce(flat, "gradient all-reduce")
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()
            return turn.steps

        return reduce_gradients

    def share_state(self, payload: dict[str, Any] | None) -> dict[str, Any] | None:
        """Rank 0's checkpoint payload (or None for a fresh run), on every rank."""
        box: list[Any] = [_on_cpu(payload) if self.world.primary else None]
        try:
            dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        except RuntimeError as err:
            raise RankLostError(f"state broadcast failed: {err}") from err
        shared: dict[str, Any] | None = box[0]
        return shared

    def close(self) -> None:
        """Leave the world. Rank 0 hosts the store: it keeps it up (briefly; a dead rank never signs off)
        until every other rank has destroyed its process group, so no rank's teardown finds it gone. (The
        aborts at exit this was first written for had another cause: see the torch._dynamo note above.)"""
        store, self._store = self._store, None
        size, primary = self.world.size, self.world.primary
        if primary and store is not None and size > 1:
            with contextlib.suppress(RuntimeError):
                store.wait([f"left/{rank}" for rank in range(1, size)], timedelta(seconds=_LEAVE_WAIT_S))
        if dist.is_initialized():
            dist.destroy_process_group()
        if not primary and store is not None:
            with contextlib.suppress(RuntimeError):
                store.set(f"left/{self.world.rank}", "1")

    def _all_reduce(self, tensor: Tensor, what: str) -> Tensor:
        on_device = tensor.to(self.device) if tensor.device != self.device else tensor
        try:
            dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
        except RuntimeError as err:  # DistBackendError, DistNetworkError, timeouts: all RuntimeErrors
            raise RankLostError(f"{what} failed; a learner rank died or hangs: {err}") from err
        if on_device is not tensor:
            tensor.copy_(on_device)
        return tensor


def _grad(parameter: Tensor) -> Tensor:
    """The parameter's gradient, zeros when it got none (every rank must send the same buffer)."""
    if parameter.grad is None:
        parameter.grad = torch.zeros_like(parameter)
    return parameter.grad


def _on_cpu(tree: Any) -> Any:
    """``tree`` with every tensor on the CPU: the receiving rank's device is not the sender's."""
    if isinstance(tree, Tensor):
        return tree.detach().cpu()
    if isinstance(tree, dict):
        return {key: _on_cpu(value) for key, value in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(_on_cpu(value) for value in tree)
    return tree


Ranks = Solo | RankGroup


def backend_for(device: torch.device, setting: str) -> str:
    """``auto``: NCCL for CUDA, gloo for CPU."""
    if setting != "auto":
        return setting
    return "nccl" if device.type == "cuda" else "gloo"
