#!/usr/bin/env bash
# The main job on the embedded defaults: a synthetic lake, then the privacy_orders DAG
# end to end under `airflow dags test` (Spark local mode, Airflow on SQLite, the
# embedded Hive catalog, the ./lake folder), then the share_orders_to_acme_ads DAG
# (DEMO_SHARE=0 skips it).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

LAKE="${CONSENTGATE_LAKE:-$ROOT/lake}"
export CONSENTGATE_LAKE="$LAKE"
CUSTOMERS="${DEMO_CUSTOMERS:-100000}"
ORDERS="${DEMO_ORDERS:-1000000}"
SEED="${DEMO_SEED:-42}"
RUN_DATE="${DEMO_RUN_DATE:-2026-11-28}"
# The DAG's data interval for this logical date ends at RUN_DATE + 1 day 00:00 UTC.
LOGICAL_DATE="$(python3 -c "import datetime,sys; print(datetime.date.fromisoformat(sys.argv[1]) + datetime.timedelta(days=1))" "$RUN_DATE")"

if [ -z "${CONSENTGATE_HMAC_KEY:-}" ]; then
  export CONSENTGATE_HMAC_KEY="consentgate-demo-throwaway-key-do-not-use-for-real-data"
  echo "demo: using a throwaway pseudonymisation key (CONSENTGATE_HMAC_KEY); set your own for real data"
fi

ensure_class_archive

started=$(date +%s)
# Airflow's metadata database is set up while the lake is generated.
mkdir -p "$AIRFLOW_HOME"
airflow db migrate > "$AIRFLOW_HOME/db-migrate.log" 2>&1 &
migrating=$!
echo "demo: generating $CUSTOMERS customers and $ORDERS orders into $LAKE (seed $SEED)"
consentgate generate --lake "$LAKE" --customers "$CUSTOMERS" --orders "$ORDERS" --seed "$SEED" --run-date "$RUN_DATE" 2> "$ROOT/.airflow-generate.log" || {
  cat "$ROOT/.airflow-generate.log" >&2; exit 1; }
wait "$migrating" || { cat "$AIRFLOW_HOME/db-migrate.log" >&2; exit 1; }
generated=$(date +%s)
echo "demo: generated (and Airflow's database migrated) in $((generated - started)) s"

echo "demo: running DAG privacy_orders for run date $RUN_DATE (airflow dags test, logs in $AIRFLOW_HOME/dags-test.log)"
status=0
airflow dags test privacy_orders "$LOGICAL_DATE" > "$AIRFLOW_HOME/dags-test.log" 2>&1 || status=$?
finished=$(date +%s)

python "$ROOT/scripts/task_durations.py" privacy_orders
echo "demo: DAG run took $((finished - generated)) s wall (airflow dags test; whole demo $((finished - started)) s)"
consentgate status --lake "$LAKE" --dataset orders || true  # the DAG's own outcome decides below
echo "  reports index: $LAKE/reports/index.html (every dataset's latest run; open it in a browser)"
if [ "$status" -ne 0 ]; then
  echo "demo: the DAG run failed (exit $status); see $AIRFLOW_HOME/dags-test.log" >&2
  exit "$status"
fi
if [ "${DEMO_SHARE:-1}" != "0" ]; then
  # The shipped share policy: the consented export to acme_ads, logged as a disclosure.
  echo "demo: running DAG share_orders_to_acme_ads (logs in $AIRFLOW_HOME/dags-test-share.log)"
  share_started=$(date +%s)
  airflow dags test share_orders_to_acme_ads "$LOGICAL_DATE" > "$AIRFLOW_HOME/dags-test-share.log" 2>&1 || {
    echo "demo: the share DAG run failed; see $AIRFLOW_HOME/dags-test-share.log" >&2; exit 1; }
  python "$ROOT/scripts/task_durations.py" share_orders_to_acme_ads
  echo "demo: share DAG run took $(( $(date +%s) - share_started )) s wall"
  python -c "import json, sys; d = json.loads(open(sys.argv[1]).read().splitlines()[-1]); print('  disclosed to {recipient} for {purpose}: {rows} rows of {subjects} customers at {at} -> {path}'.format(**d))" "$LAKE/reports/disclosures.jsonl"
fi
CURRENT_DIR="$LAKE/clean/orders/$(tr -d '[:space:]' < "$LAKE/clean/orders/CURRENT")"
QUERY="select record_state, count(*) as rows from read_parquet('$CURRENT_DIR/*/*.parquet', hive_partitioning = true) group by 1 order by 1"
echo
echo "The published table, read with DuckDB (no Spark):"
echo "  python -c \"import duckdb; print(duckdb.sql(\\\"$QUERY\\\"))\""
python -c "import duckdb, sys; print(duckdb.sql(sys.argv[1]))" "$QUERY"
