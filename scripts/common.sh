# Sourced by the demo and test scripts: checks the machine, creates .venv when missing
# and installs consentgate with its pinned stack, then sets the embedded environment.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

require_java() {
  if ! command -v java >/dev/null 2>&1; then
    echo "consentgate needs Java 17 for Spark, and 'java' is not on the PATH: install OpenJDK 17 (e.g. apt-get install openjdk-17-jre-headless)." >&2
    exit 1
  fi
  local major
  major="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)"
  if [ -z "$major" ] || [ "$major" -lt 17 ]; then
    echo "consentgate needs Java 17 for Spark; found Java ${major:-of unknown version}: install OpenJDK 17." >&2
    exit 1
  fi
}

find_python() {
  local candidate
  for candidate in "${PYTHON:-}" python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      echo "$candidate"
      return
    fi
  done
  echo "consentgate needs Python 3.11 or newer (python3.11 not found)." >&2
  exit 1
}

ensure_venv() {
  local stamp="$VENV/.consentgate-installed"
  if [ -f "$stamp" ] && [ "$stamp" -nt "$ROOT/setup.cfg" ] && [ "$stamp" -nt "$ROOT/constraints.txt" ]; then
    return
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV"
    "$(find_python)" -m venv "$VENV"
  fi
  echo "installing consentgate and its pinned stack into $VENV (a few minutes the first time)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -c "$ROOT/constraints.txt" -e "$ROOT[dev]"
  touch "$stamp"
}

# A JVM class archive (transforms/class_archive.py) that shortens every Spark driver's
# start by about 8 s: written once per virtual environment (about 2.5 minutes), and
# again after the stack is reinstalled. The demo uses it; the tests start without it.
ensure_class_archive() {
  local archive="$VENV/consentgate-classes.jsa"
  if [ ! -f "$archive" ] || [ "$VENV/.consentgate-installed" -nt "$archive" ]; then
    echo "writing a JVM class archive for faster Spark starts to $archive (a few minutes, once)"
    python -m transforms.class_archive "$archive" ||
      echo "warning: no class archive was written; Spark jobs start without one" >&2
  fi
  if [ -f "$archive" ]; then
    export CONSENTGATE_CLASS_ARCHIVE="$archive"
  fi
}

embedded_environment() {
  export PATH="$VENV/bin:$PATH"
  export PYSPARK_PYTHON="$VENV/bin/python"
  export PYSPARK_DRIVER_PYTHON="$VENV/bin/python"
  export AIRFLOW_HOME="${AIRFLOW_HOME:-$ROOT/.airflow}"
  export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
  export AIRFLOW__CORE__LOAD_EXAMPLES=False
  export AIRFLOW__CORE__UNIT_TEST_MODE=False
  export AIRFLOW_CONN_SPARK_DEFAULT="${AIRFLOW_CONN_SPARK_DEFAULT:-{\"conn_type\": \"spark\", \"host\": \"local[2]\"}}"
  export GX_ANALYTICS_ENABLED=false
}

require_java
ensure_venv
embedded_environment
