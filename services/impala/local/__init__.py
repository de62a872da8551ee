"""`impala local`: the whole stack on one machine."""
