"""Protocol package impala.tensor (generated code under v1)."""
