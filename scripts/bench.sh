#!/usr/bin/env bash
# Benchmarks (scripts, not timed tests): ratios against a baseline measured in the same run.
#   bash scripts/bench.sh [rules] [args]   what the anonymisation rules cost (benchmarks/rules_cost.py)
#   bash scripts/bench.sh skew [args]      one customer with a million orders (benchmarks/skew.py)
#   bash scripts/bench.sh pipeline [args]  enforce, the UDF variant and validation against a plain copy
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
case "${1:-rules}" in
  skew) shift; exec python "$ROOT/benchmarks/skew.py" "$@" ;;
  pipeline) shift; exec python "$ROOT/benchmarks/pipeline.py" "$@" ;;
  rules) shift || true; exec python "$ROOT/benchmarks/rules_cost.py" "$@" ;;
  *) exec python "$ROOT/benchmarks/rules_cost.py" "$@" ;;
esac
