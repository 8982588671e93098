#!/usr/bin/env bash
# `make demo EXAMPLE=<name>`: a lab in the shape of examples/<name>'s inventory, the example
# deployed to it as its README says, then `swarm verify`. Exits 0 only when verify passes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
EXAMPLE=${1:?usage: demo-example.sh NAME (one of: $(ls examples | tr '\n' ' '))}
DIR=examples/$EXAMPLE
[ -f "$DIR/inventory/swarm.yml" ] || { echo "no example $EXAMPLE (examples: $(cd examples && ls -d */ | tr -d / | tr '\n' ' '))" >&2; exit 2; }
LAB_DIR=${SWARM_LAB_DIR:-$HOME/.cache/swarm-lab}
INV="$LAB_DIR/inventory.yml"
swarm() { "$PY" -m orchestrator.cli --project "$DIR" "$@"; }

echo "== lab in the shape of $DIR/inventory/swarm.yml"
swarm lab up

echo "== plan"
swarm -i "$INV" plan

echo "== phase 1: network, directories, Vault + Consul"
swarm -i "$INV" deploy --phase 1

echo "== Vault: initialise + unseal (keys in $LAB_DIR/vault-keys.json), push the example's lab secrets"
swarm -i "$INV" vault init --key-file "$LAB_DIR/vault-keys.json"
swarm -i "$INV" secrets push --env-file "$DIR/lab-secrets.env"

echo "== every phase in order"
swarm -i "$INV" deploy

echo "== verify: the deployed fleet against what render produces"
swarm -i "$INV" verify
echo "$EXAMPLE runs on the lab and conforms. See $DIR/README.md for what to try; tear down: swarm lab down"
