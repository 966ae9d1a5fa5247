"""One SparkSession for the whole test run (starting one takes ~12 s), on a lake of its own."""

from __future__ import annotations

import logging
import os
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Hand-written inputs share one run date, its instant t, and the raw schemas.
RUN_DATE = date(2026, 11, 28)
T = datetime(2026, 11, 29, tzinfo=UTC)
SOURCE_DDL = "order_id string, customer_id string, ordered_at timestamp"
CONSENT_DDL = (
    "subject_id string, purpose string, status string, recorded_at timestamp, expires_at timestamp, source string"
)
ORDERS_POLICY = REPO / "dags" / "policies" / "orders.yml"
TEST_KEY = "test-only-hmac-key-0123456789abcdef"
# Spark jobs the tests start in a process of their own (CONSENTGATE_SPARK_CONF): sized for
# a few thousand rows, where 200 shuffle partitions cost more than the work.
# Every JVM of the tests (the session's, spark-submit under Airflow, a killed job) runs
# tiny inputs, where the optimising JIT compiler's work never pays back: a
# `consentgate run` in a fresh JVM took 39-43 s with this, 45-46 s without. The session's
# JVM is as fast either way on an idle machine (four runs: 122 s both), but the suite
# keeps both cores busy (1-4% idle), and there the compiler's threads take CPU from the
# tests: those four runs cost 158 core-seconds with this, 216 without (198 with the
# serial collector alone). Production keeps the JVM's defaults.
# C1 alone also shrinks the code cache to 48 MB, which Spark and Great Expectations fill
# within three runs; from then on the JVM flushes compiled methods and compiles them
# again (a warm `consentgate enforce` of 1,000 orders: 20 s of CPU, 7 s of it in the
# compiler, instead of 11 s), so the cache keeps the size the JVM gives by default.
# The classes a test JVM loads are Spark's and Hadoop's, from the pinned pyspark wheel:
# verifying their bytecode at every start is a cost a test need not pay (an enforce in a
# fresh JVM, 3,000 orders: 39-43 CPU-seconds of the machine instead of 46-47).
# Added to the options the developer's environment already gives, in every test JVM.
_TEST_JVM_OPTIONS = (
    "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m -XX:+UseSerialGC"
    " -XX:+UnlockDiagnosticVMOptions -XX:-BytecodeVerificationRemote"
)
SHORT_JVM_OPTIONS = {"JAVA_TOOL_OPTIONS": f"{os.environ.get('JAVA_TOOL_OPTIONS', '')} {_TEST_JVM_OPTIONS}".strip()}
SMALL_INPUT_SPARK_CONF = {
    "spark.sql.shuffle.partitions": "2",
    "spark.sql.adaptive.enabled": "false",
    # (The web UI is off in every job already, and may not be set here.)
    # As in the test session (below): interpreted expressions, month folders listed on the driver.
    "spark.sql.codegen.factoryMode": "NO_CODEGEN",
    "spark.sql.sources.parallelPartitionDiscovery.threshold": "100000",
}


def child_job_env() -> dict[str, str]:
    """The environment of a consentgate command the tests start in a process of its own."""
    import json
    import sys

    return {
        **os.environ,
        "CONSENTGATE_HMAC_KEY": TEST_KEY,
        "CONSENTGATE_SPARK_MASTER": "local[2]",
        "PYSPARK_PYTHON": sys.executable,
        "CONSENTGATE_SPARK_CONF": json.dumps(SMALL_INPUT_SPARK_CONF),
        **SHORT_JVM_OPTIONS,
    }


os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# Data Docs cost about a second per validation; the DAG test and one run test render them.
os.environ["CONSENTGATE_DATA_DOCS"] = "off"
# Tests never read or write the developer's Airflow home (the demo's .airflow).
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="consentgate-airflow-home-")
# py4j logs at interpreter exit, after pytest has closed its capture streams.
logging.getLogger("py4j").setLevel(logging.WARNING)


# scripts/test.sh runs the tests in two pytest-xdist workers, a whole module at a time
# (`--dist loadfile`): xdist hands each worker two modules in collection order at the
# start, and the next one whenever a worker is down to its last tests. The longest
# modules come first, so that neither worker is left running a long one alone at the end
# (alphabetically, the 2.5-minute DAG test started fourth). A stable sort: the tests of a
# module keep their order.
LONGEST_MODULES_FIRST = (
    "test_dag_end_to_end.py",
    "test_bad_input_and_faults.py",
    "test_anonymisation_and_keys.py",
    "test_erasure_and_withdrawal.py",
    "test_run_end_to_end.py",
    "test_consent_properties.py",
    "test_sharing.py",
    "test_versions_and_retention.py",
    "test_erasure_after_policy_change.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: position for position, name in enumerate(LONGEST_MODULES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def session_lake(tmp_path_factory):
    from transforms.lake import Lake

    return Lake.at(str(tmp_path_factory.mktemp("lake")))


@pytest.fixture(scope="session")
def spark(session_lake):
    from transforms.session import get_session

    # The session's JVM takes this process's environment when it starts, and only then.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JAVA_TOOL_OPTIONS", SHORT_JVM_OPTIONS["JAVA_TOOL_OPTIONS"])
        session = get_session(
            session_lake,
            "consentgate-tests",
            extra_conf={
                "spark.master": "local[2]",
                "spark.ui.enabled": "false",
                # One partition after a shuffle: on a few thousand rows a second task per
                # stage only adds scheduling (about 0.7 s of an 8 s run).
                "spark.sql.shuffle.partitions": "1",
                "spark.default.parallelism": "2",
                # On inputs of a few thousand rows AQE's re-planning costs more than it saves
                # (about 15% of a run); the DAG test, the demo and the benchmarks keep it on.
                "spark.sql.adaptive.enabled": "false",
                # Compiling generated code for every query costs more than it saves on a few
                # thousand rows: interpreted expressions make a run about 20% faster. The DAG
                # test's spark-submit jobs, the demo and the benchmarks run generated code.
                "spark.sql.codegen.factoryMode": "NO_CODEGEN",
                # A partitioned version has 37 month folders, beyond the 32 above which Spark
                # lists them with a job of its own; on a local disk the driver lists faster.
                "spark.sql.sources.parallelPartitionDiscovery.threshold": "100000",
            },
        )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture
def hmac_key(monkeypatch):
    monkeypatch.setenv("CONSENTGATE_HMAC_KEY", TEST_KEY)
    return TEST_KEY.encode()
