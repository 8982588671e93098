#!/usr/bin/env bash
# The README's first command: bring the local lab fleet up and deploy the reference fleet
# to it, then show where to look. Safe to re-run (every step is idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
swarm() { "$PY" -m orchestrator.cli "$@"; }

LAB_DIR=${SWARM_LAB_DIR:-$HOME/.cache/swarm-lab}
INV="$LAB_DIR/inventory.yml"

echo "== lab: oracle (arm64), starlord (RTX 4090 stand-in), thanos (RTX 3080 stand-in)"
if ! swarm lab status >/dev/null 2>&1; then
  swarm lab up --nodes oracle,starlord,thanos
fi

echo "== plan: what runs where, and does it fit the GPUs?"
swarm -i "$INV" plan | sed -n '1,200p' | grep -E '^[a-z]|GPU|vllm' || true

echo "== phase 1: network, directories, Vault + Consul"
swarm -i "$INV" deploy --phase 1

echo "== Vault: initialise + unseal once (keys + root token in $LAB_DIR/vault-keys.json, 0600, kept offline;"
echo "   deploys use the deploy token in $LAB_DIR/vault-token, limited to the fleet's secrets), push the lab's secrets"
swarm -i "$INV" vault init --key-file "$LAB_DIR/vault-keys.json" --token-file "$LAB_DIR/vault-token"
swarm -i "$INV" secrets push --env-file examples/lab-secrets.env

echo "== every phase in order (2 control plane, 3 starlord, 4 thanos; 5 overflow is optional and off)"
swarm -i "$INV" deploy

# Where to look: what the README's "Where to look afterwards" lists, in the same words (kept
# together here and there; tests/integration/test_readme_commands.py runs every command of both).
# Clients go through the front door (HAProxy on oracle, port 80): LiteLLM and the vLLM pool
# behind it are not addressed on their own ports.
oracle=$(awk '/^  oracle:/{f=1} f&&/address:/{print $2; exit}' "$INV")
echo
echo "The reference fleet runs on the lab. Look at:"
echo "  front door, LiteLLM:   curl -H 'Authorization: Bearer sk-lab-master-9c41e77a' http://$oracle/v1/models"
echo "  front door, vLLM pool: curl -H 'Authorization: Bearer lab-vllm-key-d81f2c6b' http://$oracle/pool/v1/models"
echo "  HAProxy stats:         http://$oracle/stats"
echo "  health per service:    swarm -i $INV status"
echo "  releases per node:     swarm -i $INV releases"
echo "  conformance:           swarm -i $INV verify"
echo "  tear down:             swarm lab down"
