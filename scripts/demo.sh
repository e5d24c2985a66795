#!/usr/bin/env bash
# demo.sh - the main job in one command: build caravan, start a local cluster
# (a coordinator and a two-rank pipeline worker group under mpirun) on
# stories260K, send it a generation request over the OpenAI HTTP API and over
# gRPC, print the answers, and shut the cluster down.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh build
exec scripts/demo_cluster.sh build "${1:-../shared/models/stories260K.gguf}"
