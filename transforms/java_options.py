"""The JVM options every consentgate Spark driver starts with (pyspark-free: the DAG
files use it when they build spark-submit's configuration)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from transforms.class_archive import archive_java_options

LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")
# The throughput collector, not G1: on 2 cores G1's concurrent work competes with the
# tasks. A cold 1M-order enforce job took 68-76 s with it against 73-85 s with G1, four
# warm ones in a process 32-42 s against 41-48 s, and the demo's enforce job 73 s
# against 88-96 s (docs/performance-history.md). A JVM given two collectors does not
# start, so one chosen in JAVA_TOOL_OPTIONS (the tests choose the serial one) is kept.
DRIVER_COLLECTOR = "-XX:+UseParallelGC"
_CHOOSES_A_COLLECTOR = re.compile(r"-XX:\+Use\w*GC\b")


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
    the class archive that shortens the driver's start, when there is one, and the
    garbage collector."""
    options = [archive] if (archive := archive_java_options()) else []
    if not _CHOOSES_A_COLLECTOR.search(os.environ.get("JAVA_TOOL_OPTIONS", "")):
        options.append(DRIVER_COLLECTOR)
    if derby_home:
        options.append(f"-Dderby.system.home={derby_home}")
    if os.environ.get("CONSENTGATE_DEBUG") != "1":
        options.append(f"-Dlog4j2.configurationFile={LOG4J_CONFIG.resolve().as_uri()}")
    return " ".join(options)
