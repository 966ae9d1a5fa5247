#!/usr/bin/env bash
# Benchmarks (scripts, not timed tests): ratios against a baseline measured in the same run.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
python "$ROOT/benchmarks/rules_cost.py" "$@"
