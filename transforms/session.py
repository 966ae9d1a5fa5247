"""The SparkSession every consentgate job runs in.

Judgements are made in UTC whatever the machine's zone, so the session zone is pinned.
On the embedded set-up the catalog is a Hive metastore on Derby under ``<lake>/_catalog``;
set ``CONSENTGATE_CATALOG=external`` to use the cluster's metastore instead (then
``spark.hadoop.hive.metastore.uris`` comes from the cluster's configuration).
"""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from transforms.java_options import driver_java_options, executor_java_options
from transforms.lake import Lake, local_path
from transforms.spark_settings import NO_JOB_RECORDS, job_spark_conf


def session_conf(lake: Lake) -> dict[str, str]:
    conf = {
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.sources.partitionOverwriteMode": "static",
        "spark.pyspark.python": os.environ.get("PYSPARK_PYTHON", sys.executable),
        **NO_JOB_RECORDS,
    }
    embedded = os.environ.get("CONSENTGATE_CATALOG", "embedded") == "embedded"
    if embedded:
        conf.update(embedded_catalog_conf(lake))
    conf["spark.driver.extraJavaOptions"] = driver_java_options(local_path(lake.catalog) if embedded else None)
    conf["spark.executor.extraJavaOptions"] = executor_java_options(
        job_spark_conf().get("spark.executor.extraJavaOptions")
    )
    return conf


def embedded_catalog_conf(lake: Lake) -> dict[str, str]:
    catalog = local_path(lake.catalog)
    return {
        "spark.sql.warehouse.dir": lake.path("_catalog", "warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL": (f"jdbc:derby:;databaseName={catalog}/metastore_db;create=true"),
    }


def silence_query_context_loggers() -> None:
    """PySpark logs every failed query's full message, which can quote a row's values
    (e.g. the value a cast could not convert), through two loggers of its own. The
    failure itself still reaches the command line, reported by error class only."""
    if os.environ.get("CONSENTGATE_DEBUG") == "1":
        return
    from pyspark.logger import PySparkLogger

    for name in ("DataFrameQueryContextLogger", "SQLQueryContextLogger"):
        PySparkLogger.getLogger(name).disabled = True


def get_session(lake: Lake, app_name: str = "consentgate", extra_conf: dict[str, str] | None = None) -> SparkSession:
    """The active session (spark-submit, tests) or a new local one configured for ``lake``."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    silence_query_context_loggers()
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(app_name)
    # Under spark-submit the JVM already exists (it set PYSPARK_GATEWAY_PORT) and its
    # master comes from the submit; only a job started from plain Python picks one here.
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = builder.master(os.environ.get("CONSENTGATE_SPARK_MASTER", "local[*]"))
    for key, value in {**job_spark_conf(), **session_conf(lake), **(extra_conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.enableHiveSupport().getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("CONSENTGATE_SPARK_LOG_LEVEL", "WARN"))
    return spark
