#!/usr/bin/env bash
# The Airflow UI on the embedded set-up: `airflow standalone` (API server with the UI,
# scheduler, DAG processor, triggerer) on the demo's SQLite home (.airflow) and lake,
# with the privacy_<dataset> DAGs, their docs and their runs. Open http://localhost:8080;
# standalone prints the admin password it generated (also in .airflow/).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
export CONSENTGATE_LAKE="${CONSENTGATE_LAKE:-$ROOT/lake}"
# The throwaway key only for the demo's own lake: on any other lake it would beat the
# consentgate_hmac connection (a variable that is set wins) with a key anyone can read.
if [ -z "${CONSENTGATE_HMAC_KEY:-}" ] && [ "$CONSENTGATE_LAKE" = "$ROOT/lake" ]; then
  export CONSENTGATE_HMAC_KEY="consentgate-demo-throwaway-key-do-not-use-for-real-data"
  echo "airflow_ui: the demo lake, with the demo's throwaway pseudonymisation key"
fi
mkdir -p "$AIRFLOW_HOME"
airflow db migrate > "$AIRFLOW_HOME/db-migrate.log" 2>&1 || { cat "$AIRFLOW_HOME/db-migrate.log" >&2; exit 1; }
exec airflow standalone
