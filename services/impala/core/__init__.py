"""Shared core. Modules here that torch-free services import (tensors, settings, logs, metrics,
grpc_server, redis_keys) must never import torch."""
