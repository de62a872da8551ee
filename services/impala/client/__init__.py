"""Environment client SDK and `impala env`."""
