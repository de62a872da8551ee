"""Generated from proto/impala/tensor/v1 by `make proto`; never edit by hand."""
