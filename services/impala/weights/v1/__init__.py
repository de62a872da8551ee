"""Generated from proto/impala/weights/v1 by `make proto`; never edit by hand."""
