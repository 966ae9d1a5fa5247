#!/usr/bin/env bash
# The test suite: ruff, the policy linter and the register's staleness check, then
# pytest (unit tests on tiny DataFrames, the in-process run and the Airflow DAG end to
# end). Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
cd "$ROOT"
# Every test run starts its JVMs the same way, on a fresh machine or after the demo.
unset CONSENTGATE_CLASS_ARCHIVE
ruff check transforms expectations dags tests scripts benchmarks
# The shipped policies must lint clean, and docs/register.* must be what they give now.
consentgate lint dags/policies
consentgate register --policies dags/policies --out docs --check
bash "$ROOT/scripts/ensure_chromium.sh"
# Two workers, a module each at a time (module fixtures stay in one process), in the
# order tests/conftest.py gives (longest modules first): much of the suite's work is
# single-threaded (Spark planning, JVM and Airflow start-ups), so one process left a core
# idle; two kept both about 90% busy. `-n 0` runs serially.
exec python -m pytest --numprocesses 2 --dist loadfile --no-loadscope-reorder "$@"
