#!/usr/bin/env bash
# The "310" loan through the gateway, narrated call by call: `fintech-sandbox demo loan-310`
# (sandbox/demo/credit.py), against a running sandbox (`make run`).
#   Usage: examples/loan_310.sh [gateway-url] [demo options: --port-offset N, --no-color, ...]
set -euo pipefail
if [[ $# -gt 0 && $1 != -* ]]; then set -- --gateway-url "$@"; fi  # the old positional gateway URL
exec "$(dirname "$0")/../.venv/bin/fintech-sandbox" demo loan-310 "$@"
