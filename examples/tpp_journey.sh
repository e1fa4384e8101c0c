#!/usr/bin/env bash
# The open-banking TPP journey through the gateway, narrated call by call: `fintech-sandbox demo
# tpp-journey` (sandbox/demo/openbanking.py), against a running sandbox (`make run`).
#   Usage: examples/tpp_journey.sh [gateway-url] [demo options: --port-offset N, --no-color, ...]
set -euo pipefail
if [[ $# -gt 0 && $1 != -* ]]; then set -- --gateway-url "$@"; fi  # the old positional gateway URL
exec "$(dirname "$0")/../.venv/bin/fintech-sandbox" demo tpp-journey "$@"
