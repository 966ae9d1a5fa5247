"""Extra Spark settings for every consentgate job, from ``CONSENTGATE_SPARK_CONF``.

A deployment sizes its jobs (shuffle partitions, executor memory, adaptive execution)
without editing the DAG files: the same settings reach the DAG's spark-submit steps and
the jobs started from plain Python. Settings consentgate needs for correctness (the
session time zone, the catalog, the logging configuration) cannot be overridden.
"""

from __future__ import annotations

import json
import os

from transforms.errors import ConsentgateError

VARIABLE = "CONSENTGATE_SPARK_CONF"
# Judgements are made in UTC, and the logging configuration keeps data out of the logs.
# What every job sets after the deployment's settings, for correctness (instants in UTC,
# microsecond timestamps, a write replacing only its own output, the catalog, the logging
# that keeps data out of the logs) or for its logs: a value given here would be ignored.
PROTECTED = (
    "spark.sql.session.timeZone",
    "spark.driver.extraJavaOptions",
    "spark.sql.catalogImplementation",
    "spark.sql.parquet.outputTimestampType",
    "spark.sql.sources.partitionOverwriteMode",
    "spark.ui.showConsoleProgress",
    "spark.pyspark.python",
    "spark.pyspark.driver.python",
    *(
        # A failed task's message, which can quote the value it failed on, is shown by
        # the UI and kept by event logs (for a history server): neither runs.
        "spark.ui.enabled",
        "spark.eventLog.enabled",
    ),
)
# What keeps data out of Spark's own records of a job (see PROTECTED).
NO_JOB_RECORDS = {"spark.ui.enabled": "false", "spark.eventLog.enabled": "false"}
# The run's counts are observed while its output is written (``Observation``). When every
# row a stage reads is filtered out before the write (an incremental run that judges
# again only quarantined rows), adaptive execution replaces the empty part of the plan,
# the observing node with it, and the counts are lost (an AssertionError in
# ``Observation.get``); without this rule Spark runs the empty stage, which costs nothing.
# Added to the rules a deployment excludes, if any.
EXCLUDED_RULES = "spark.sql.adaptive.optimizer.excludedRules"
KEEP_OBSERVED_COUNTS = "org.apache.spark.sql.execution.adaptive.AQEPropagateEmptyRelation"
# Defaults a deployment may override. Spark's 200 shuffle partitions cost a run on one
# machine more than its work (the same 1M-row enforce took 59 s with 200, 24-27 s with
# 8-16): most of a run's shuffles are small (erasure, consent states, counts). A
# cluster sized for more sets its own number.
DEFAULTS = {"spark.sql.shuffle.partitions": "16"}
# PySpark's DataFrame debugging records the Python call site of every Column operation in
# the JVM, several Py4J round trips each (an enforce job at test scale made 13,000 with
# it, 6,900 without), only to add the Python line to a Spark error's query context, which
# consentgate prints only under CONSENTGATE_DEBUG=1 (otherwise the error class alone, so
# that no value reaches a log). Kept on under CONSENTGATE_DEBUG=1.
NO_PYTHON_CALL_SITES = {"spark.python.sql.dataFrameDebugging.enabled": "false"}


def job_spark_conf() -> dict[str, str]:
    """What every consentgate job starts with: the defaults, then the deployment's settings."""
    debugging = os.environ.get("CONSENTGATE_DEBUG") == "1"
    conf = {**DEFAULTS, **({} if debugging else NO_PYTHON_CALL_SITES), **extra_spark_conf()}
    excluded = [rule.strip() for rule in conf.get(EXCLUDED_RULES, "").split(",") if rule.strip()]
    conf[EXCLUDED_RULES] = ",".join([*excluded, *([] if KEEP_OBSERVED_COUNTS in excluded else [KEEP_OBSERVED_COUNTS])])
    return conf


def extra_spark_conf() -> dict[str, str]:
    text = os.environ.get(VARIABLE, "").strip()
    if not text:
        return {}
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConsentgateError(f"{VARIABLE}: not a JSON object ({err.msg})") from None
    if not isinstance(settings, dict) or not all(isinstance(k, str) and k.startswith("spark.") for k in settings):
        raise ConsentgateError(
            f'{VARIABLE}: must be a JSON object of spark.* settings, e.g. {{"spark.sql.shuffle.partitions": "8"}}'
        )
    for key, value in settings.items():
        if value is None or isinstance(value, (dict, list)):
            raise ConsentgateError(f"{VARIABLE}: {key} must be a string, a number or true/false")
    protected = sorted(set(settings) & set(PROTECTED))
    if protected:
        python = " (set CONSENTGATE_PYSPARK_PYTHON for the DAGs, PYSPARK_PYTHON for the command line)"
        hint = python if protected[0].startswith("spark.pyspark.") else ""
        raise ConsentgateError(f"{VARIABLE}: {protected[0]} is set by consentgate and cannot be overridden{hint}")
    return {key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in settings.items()}
