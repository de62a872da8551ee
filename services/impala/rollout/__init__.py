"""Protocol package impala.rollout (generated code under v1)."""
