"""Generated from proto/impala/rollout/v1 by `make proto`; never edit by hand."""
