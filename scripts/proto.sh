#!/usr/bin/env bash
# Generate Python, gRPC and typing stubs from proto/ into services/ (the package `impala`).
# Usage: scripts/proto.sh [--check]   --check regenerates into a temp dir and fails on any difference.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$(cd "$root" && cd "${VENV:-.venv}" && pwd)
out="$root/services"
if [[ "${1:-}" == "--check" ]]; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
fi
cd "$root/proto"
mapfile -t protos < <(find impala -name '*.proto' | sort)
"$venv/bin/python" -m grpc_tools.protoc -I. \
  --python_out="$out" --grpc_python_out="$out" \
  --plugin=protoc-gen-mypy="$venv/bin/protoc-gen-mypy" --mypy_out="$out" \
  --plugin=protoc-gen-mypy_grpc="$venv/bin/protoc-gen-mypy_grpc" --mypy_grpc_out="$out" \
  "${protos[@]}" 2> >(grep -v "^Writing mypy" >&2)
if [[ "${1:-}" == "--check" ]]; then
  stale=0
  while IFS= read -r f; do
    rel=${f#"$out"/}
    if ! cmp -s "$f" "$root/services/$rel"; then
      echo "proto-check: services/$rel is stale; run 'make proto'" >&2
      stale=1
    fi
  done < <(find "$out" -type f)
  exit $stale
fi
