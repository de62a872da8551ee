"""Redis Streams rollout buffer: producer (pools) and consumer (learner)."""
