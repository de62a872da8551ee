"""How large the rollout stream must be for the learner to complete a batch.

The pools stop writing (backpressure) while the stream holds ``buffer_capacity`` entries, and entries
read but not yet acknowledged count: the learner acknowledges only after the step that used them. A
stream that cannot hold what the learner must read before its next step therefore deadlocks silently:
the pools wait for space and the learner waits for a batch (ADR 0022, ADR 0024).
"""

from __future__ import annotations


def rank_buffer_floor(batch_size: int, ranks: int, prefetch: int) -> int:
    """The smallest buffer capacity with which N learner ranks cannot starve one another: every rank
    but one may hold ``prefetch`` batches of B/N read ahead plus a batch not yet complete, and the last
    still finds its B/N rollouts (the buffer counts what ranks hold; ADR 0022). One learner (N = 1)
    reads no batch ahead of its step and needs B."""
    share = batch_size // ranks
    return (ranks - 1) * ((prefetch + 1) * share - 1) + share
