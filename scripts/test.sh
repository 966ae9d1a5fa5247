#!/usr/bin/env bash
# The test suite: ruff, then pytest (unit tests on tiny DataFrames, the in-process run
# and the Airflow DAG end to end). Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"
ruff check transforms expectations dags tests scripts benchmarks
exec python -m pytest "$@"
