"""impala: a Kubernetes-native IMPALA (V-trace actor-learner) system.

Subpackages, one per service: ``actorpool`` (gRPC ingress for env clients), ``learner`` (V-trace
learner), ``weights`` (weight broadcast), ``control`` (FastAPI control API), ``client`` (env client SDK),
``local`` (the whole stack on one machine), ``buffer`` (Redis Streams rollout buffer), and ``core``
(shared pieces). Generated protocol code lives under ``impala.<api>.v1``.
"""

__version__ = "0.1.0"
