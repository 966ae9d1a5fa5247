"""The JVM options every consentgate Spark driver starts with (pyspark-free: the DAG
files use it when they build spark-submit's configuration)."""

from __future__ import annotations

import os
from pathlib import Path

from transforms.class_archive import archive_java_options

LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")


def executor_java_options(deployment_options: str | None = None) -> str:
    """The executors' JVM options: a deployment's own, plus the logging configuration
    (executors log failed tasks too; on a cluster their logs stay on the workers)."""
    options = [deployment_options] if deployment_options else []
    if os.environ.get("CONSENTGATE_DEBUG") != "1":
        options.append(f"-Dlog4j2.configurationFile={LOG4J_CONFIG.resolve().as_uri()}")
    return " ".join(options)


def driver_java_options(derby_home: str | None) -> str:
    """Derby's home for the embedded catalog, the logging configuration that keeps
    failed tasks' messages (which can quote data) out of the logs, unless debugging, and
    the class archive that shortens the driver's start, when there is one."""
    options = [archive] if (archive := archive_java_options()) else []
    if derby_home:
        options.append(f"-Dderby.system.home={derby_home}")
    if os.environ.get("CONSENTGATE_DEBUG") != "1":
        options.append(f"-Dlog4j2.configurationFile={LOG4J_CONFIG.resolve().as_uri()}")
    return " ".join(options)
