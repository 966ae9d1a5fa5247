#!/usr/bin/env bash
# The Airflow UI on the embedded set-up: `airflow standalone` (API server with the UI,
# scheduler, DAG processor, triggerer) on the demo's SQLite home (.airflow) and lake,
# with the privacy_<dataset> DAGs, their docs and their runs. Open http://localhost:8080;
# standalone prints the admin password it generated (also in .airflow/).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
export CONSENTGATE_LAKE="${CONSENTGATE_LAKE:-$ROOT/lake}"
if [ -z "${CONSENTGATE_HMAC_KEY:-}" ]; then
  export CONSENTGATE_HMAC_KEY="consentgate-demo-throwaway-key-do-not-use-for-real-data"
  echo "airflow_ui: using the demo's throwaway pseudonymisation key; set CONSENTGATE_HMAC_KEY for real data"
fi
mkdir -p "$AIRFLOW_HOME"
airflow db migrate > "$AIRFLOW_HOME/db-migrate.log" 2>&1 || { cat "$AIRFLOW_HOME/db-migrate.log" >&2; exit 1; }
exec airflow standalone
