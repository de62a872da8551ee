"""Learner service: Redis rollouts in, V-trace updates, weights out, checkpoints."""
