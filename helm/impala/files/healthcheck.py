#!/usr/bin/env python3
"""Health probe for impala endpoints, used by `helm test` pods and the images' HEALTHCHECK.

    healthcheck.py grpc HOST:PORT [--service NAME] [--tls-ca PEM] [--server-name NAME]
    healthcheck.py http URL

grpc: calls grpc.health.v1.Health/Check (no token needed) and succeeds on SERVING.
http: GET, succeeds on a 2xx status.
Exit status 0 = healthy, 1 = not healthy (the reason is printed), 2 = bad arguments.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from pathlib import Path


def check_grpc(target: str, service: str, tls_ca: Path | None, server_name: str, timeout: float) -> str | None:
    """None when the health service answers SERVING, else the reason."""
    import grpc  # imported here so the http mode works without grpcio
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    if tls_ca is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates=tls_ca.read_bytes())
        channel = grpc.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as err:
            return f"{target}: {err.code().name}: {err.details()}"
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return f"{target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
    return None


def check_http(url: str, timeout: float) -> str | None:
    """None when GET url answers 2xx, else the reason."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as err:
        return f"{url}: HTTP {err.code}"
    except (urllib.error.URLError, OSError) as err:
        return f"{url}: {err}"
    return None if 200 <= status < 300 else f"{url}: HTTP {status}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeout", type=float, default=5.0, help="Seconds to wait for the answer.")
    modes = parser.add_subparsers(dest="mode", required=True)
    grpc_mode = modes.add_parser("grpc", help="grpc.health.v1 Check")
    grpc_mode.add_argument("target", help="host:port")
    grpc_mode.add_argument("--service", default="", help="Service name to check ('' = the whole server).")
    grpc_mode.add_argument("--tls-ca", type=Path, default=None, help="PEM CA bundle; enables TLS.")
    grpc_mode.add_argument("--server-name", default="", help="Expected name in the server certificate.")
    http_mode = modes.add_parser("http", help="HTTP GET")
    http_mode.add_argument("url")
    args = parser.parse_args(argv)
    if args.mode == "grpc":
        problem = check_grpc(args.target, args.service, args.tls_ca, args.server_name, args.timeout)
    else:
        problem = check_http(args.url, args.timeout)
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
