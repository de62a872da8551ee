"""Generated from proto/impala/actorpool/v1 by `make proto`; never edit by hand."""
