#!/usr/bin/env bash
# demo_cluster.sh BUILD_DIR MODEL - start a local caravan cluster (one
# coordinator + one worker group of two pipeline stages under mpirun), ask it
# for a completion over the OpenAI HTTP API and over gRPC, print the answers,
# and stop everything. Used by scripts/demo.sh.
set -euo pipefail
BUILD=${1:?usage: demo_cluster.sh BUILD_DIR MODEL}
MODEL=${2:?usage: demo_cluster.sh BUILD_DIR MODEL}
BIN=$BUILD/cli/caravan
[ -f "$MODEL" ] || { echo "demo: model not found: $MODEL" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HTTP=$(free_port); GRPC=$(free_port); CLUSTER=$(free_port)
LOG=$(mktemp -t caravan-demo.XXXXXX)

echo "demo: starting coordinator + one group (--pp 2: two MPI ranks) on $MODEL"
"$BIN" serve -m "$MODEL" --pp 2 --tp 1 --groups 1 --threads 1 \
  --http-port "$HTTP" --grpc-port "$GRPC" --cluster-port "$CLUSTER" >"$LOG" 2>&1 &
SERVE=$!
cleanup() { kill "$SERVE" 2>/dev/null || true; wait "$SERVE" 2>/dev/null || true; rm -f "$LOG"; }
trap cleanup EXIT

# Wait until a worker group has joined (health turns 200).
for _ in $(seq 1 120); do
  if curl -sf "http://127.0.0.1:$HTTP/health" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$SERVE" 2>/dev/null; then echo "demo: caravan serve exited:" >&2; cat "$LOG" >&2; exit 1; fi
  sleep 0.5
done
curl -sf "http://127.0.0.1:$HTTP/health" >/dev/null || { echo "demo: no group joined in 60 s" >&2; cat "$LOG" >&2; exit 1; }
echo "demo: cluster up: $(curl -s "http://127.0.0.1:$HTTP/health")"

echo
echo "== OpenAI HTTP: POST /v1/completions"
curl -s "http://127.0.0.1:$HTTP/v1/completions" -H 'Content-Type: application/json' \
  -d '{"prompt": "Once upon a time", "max_tokens": 48, "temperature": 0}'
echo
echo
echo "== gRPC: caravan generate (streamed)"
"$BIN" generate --server "127.0.0.1:$GRPC" -p "Once upon a time" -n 48 --temp 0
echo
echo "demo: done; stopping the cluster"
