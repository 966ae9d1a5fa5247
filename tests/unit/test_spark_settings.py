"""CONSENTGATE_SPARK_CONF: a deployment's extra Spark settings, checked before any job starts."""

from __future__ import annotations

import subprocess

import pytest

from transforms.errors import ConsentgateError
from transforms.spark_settings import extra_spark_conf


def test_no_variable_adds_nothing(monkeypatch):
    monkeypatch.delenv("CONSENTGATE_SPARK_CONF", raising=False)
    assert extra_spark_conf() == {}


def test_settings_become_spark_strings(monkeypatch):
    monkeypatch.setenv(
        "CONSENTGATE_SPARK_CONF", '{"spark.sql.shuffle.partitions": 8, "spark.sql.adaptive.enabled": false}'
    )
    assert extra_spark_conf() == {"spark.sql.shuffle.partitions": "8", "spark.sql.adaptive.enabled": "false"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("shuffle=8", "CONSENTGATE_SPARK_CONF: not a JSON object"),
        ('["spark.x"]', "CONSENTGATE_SPARK_CONF: must be a JSON object of spark.* settings"),
        ('{"shuffle.partitions": "8"}', "CONSENTGATE_SPARK_CONF: must be a JSON object of spark.* settings"),
        ('{"spark.sql.session.timeZone": "Europe/Paris"}', "spark.sql.session.timeZone is set by consentgate"),
        ('{"spark.driver.extraJavaOptions": "-Dx=1"}', "spark.driver.extraJavaOptions is set by consentgate"),
        # Set after the deployment's settings: they were ignored without a word.
        ('{"spark.sql.sources.partitionOverwriteMode": "dynamic"}', "partitionOverwriteMode is set by consentgate"),
        ('{"spark.pyspark.python": "/usr/bin/python3"}', "(set CONSENTGATE_PYSPARK_PYTHON for the DAGs"),
        # A failed task's message can quote a value: no UI shows it, no event log keeps it.
        ('{"spark.ui.enabled": "true"}', "spark.ui.enabled is set by consentgate"),
        ('{"spark.eventLog.enabled": true}', "spark.eventLog.enabled is set by consentgate"),
        ('{"spark.executor.memory": null}', "spark.executor.memory must be a string, a number or true/false"),
        ('{"spark.executor.memory": {"size": 4}}', "spark.executor.memory must be a string, a number or true/false"),
    ],
)
def test_a_bad_value_stops_with_one_line_naming_the_variable(monkeypatch, value, message):
    monkeypatch.setenv("CONSENTGATE_SPARK_CONF", value)
    with pytest.raises(ConsentgateError) as raised:
        extra_spark_conf()
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_jobs_start_with_few_shuffle_partitions_unless_the_deployment_sets_them(monkeypatch):
    from transforms.spark_settings import job_spark_conf

    no_call_sites = {"spark.python.sql.dataFrameDebugging.enabled": "false"}
    # Always: the run's observed counts must survive adaptive execution's empty stages.
    rule = "org.apache.spark.sql.execution.adaptive.AQEPropagateEmptyRelation"
    counts_kept = {"spark.sql.adaptive.optimizer.excludedRules": rule}
    monkeypatch.delenv("CONSENTGATE_SPARK_CONF", raising=False)
    monkeypatch.delenv("CONSENTGATE_DEBUG", raising=False)
    assert job_spark_conf() == {"spark.sql.shuffle.partitions": "16", **no_call_sites, **counts_kept}
    monkeypatch.setenv("CONSENTGATE_SPARK_CONF", '{"spark.sql.shuffle.partitions": 400}')
    assert job_spark_conf() == {"spark.sql.shuffle.partitions": "400", **no_call_sites, **counts_kept}
    # Debugging keeps PySpark's Python call sites in Spark's error context.
    monkeypatch.setenv("CONSENTGATE_DEBUG", "1")
    assert job_spark_conf() == {"spark.sql.shuffle.partitions": "400", **counts_kept}
    # A deployment's own excluded rules stay, with that one added.
    monkeypatch.setenv("CONSENTGATE_SPARK_CONF", '{"spark.sql.adaptive.optimizer.excludedRules": "a.B"}')
    assert job_spark_conf()["spark.sql.adaptive.optimizer.excludedRules"] == f"a.B,{rule}"


def test_sessions_record_no_python_call_sites(spark, monkeypatch):
    import pyspark.errors.utils

    assert spark.conf.get("spark.python.sql.dataFrameDebugging.enabled") == "false"
    # PySpark reads the setting once per process, from the active session.
    monkeypatch.setattr(pyspark.errors.utils, "_enable_debugging_cache", None)
    assert pyspark.errors.utils.is_debugging_enabled() is False


def test_drivers_start_with_the_parallel_collector_unless_the_environment_chose_one(monkeypatch):
    from transforms.java_options import DRIVER_COLLECTOR, driver_java_options

    monkeypatch.delenv("JAVA_TOOL_OPTIONS", raising=False)
    assert DRIVER_COLLECTOR in driver_java_options(None).split()
    monkeypatch.setenv("JAVA_TOOL_OPTIONS", "-Xss4m -XX:+UseSerialGC")
    options = driver_java_options(None).split()
    assert not [o for o in options if o.endswith("GC")]
    # A JVM given two collectors does not start at all.
    started = subprocess.run(["java", *options, "-version"], capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stderr[-300:]


def test_no_job_shows_or_keeps_spark_s_record_of_a_failed_task(tmp_path):
    from transforms.airflow_dag import spark_conf
    from transforms.lake import Lake
    from transforms.session import session_conf

    lake = Lake.at(str(tmp_path))
    for conf in (session_conf(lake), spark_conf(lake, "/usr/bin/python3")):
        assert conf["spark.ui.enabled"] == conf["spark.eventLog.enabled"] == "false"
