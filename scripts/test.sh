#!/usr/bin/env bash
# The test suite: unit tests on tiny DataFrames, then the Spark-heavy and Airflow
# end-to-end tests. Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"
exec python -m pytest "$@"
