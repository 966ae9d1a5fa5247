"""A class-data-sharing archive of the JVM classes a consentgate job loads.

Every DAG task is a fresh spark-submit, and a fresh driver spends most of its first
seconds loading and verifying Spark's, Hive's and Parquet's classes (a session and a
first query on the catalog took 20-22 s cold on 2 cores, 13-14 s with an archive). The
JVM can map those classes, already parsed and verified, from an archive written by an
earlier run (Java's AppCDS). ``python -m transforms.class_archive <path>`` writes one by
running consentgate's own jobs on a small synthetic lake under spark-submit; a driver
then uses it when ``CONSENTGATE_CLASS_ARCHIVE`` names the file (``scripts/common.sh``
builds it into the virtual environment and sets the variable).

The archive only ever speeds a start up. The JVM checks it against its own build and
against the class path's jars, and ignores one that does not match (another JDK, another
pyspark) or is missing (a cluster's driver on another machine), with a warning on
stderr: the JVM's own warnings would otherwise go to stdout, where the commands print
their JSON lines.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

VARIABLE = "CONSENTGATE_CLASS_ARCHIVE"
JVM_WARNINGS_TO_STDERR = "-Xlog:disable -Xlog:all=warning:stderr"
TRAINING_KEY = "consentgate-class-archive-training-key-synthetic-data-only"
TRAINING_RUN_DATE = "2026-11-28"
POLICIES = Path(__file__).resolve().parent.parent / "dags" / "policies"


def archive_java_options() -> str:
    """The driver's JVM options that use the archive, or none when there is none to use."""
    archive = os.environ.get(VARIABLE, "").strip()
    if not archive or not Path(archive).is_file():
        return ""
    return f"-XX:SharedArchiveFile={archive} {JVM_WARNINGS_TO_STDERR}"


def train(lake: str) -> None:
    """What the archive's driver runs: consentgate's own jobs on a small lake, so that
    the archive holds the classes they load (Parquet, Hive, joins, sorts, writes)."""
    from transforms.cli import main

    # The orders policy alone: the other shipped policies load few classes it does not
    # (all three made the build 26 s longer, 163 s against 137 s).
    steps = [
        ["generate", "--lake", lake, "--customers", "200", "--orders", "2000", "--run-date", TRAINING_RUN_DATE],
        ["run", "--policy", str(POLICIES / "orders.yml"), "--lake", lake, "--run-date", TRAINING_RUN_DATE],
    ]
    for step in steps:
        if main(step) != 0:
            raise SystemExit(f"class archive: the training step {step[0]} failed")


def build(target: Path) -> None:
    """Writes the archive to ``target``, replacing it whole: a driver starting meanwhile
    sees the old archive or the new one, never half of one."""
    from pyspark.find_spark_home import _find_spark_home

    from transforms.java_options import driver_java_options
    from transforms.lake import Lake, local_path

    os.environ.pop(VARIABLE, None)  # the archive is written from a start without one
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="consentgate-class-archive-") as scratch:
        lake = Path(scratch) / "lake"
        written = target.with_name(f".{target.name}.{os.getpid()}")
        derby_home = local_path(Lake.at(str(lake)).catalog)
        options = f"{driver_java_options(derby_home)} -XX:ArchiveClassesAtExit={written}"
        env = {
            **os.environ,
            "CONSENTGATE_HMAC_KEY": TRAINING_KEY,
            "CONSENTGATE_DATA_DOCS": "off",
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
        }
        command = [
            str(Path(_find_spark_home()) / "bin" / "spark-submit"),
            "--master",
            "local[2]",
            "--driver-memory",
            "1g",
            "--conf",
            f"spark.driver.extraJavaOptions={options}",
            "--conf",
            "spark.ui.enabled=false",
            __file__,
            "train",
            str(lake),
        ]
        # spark-submit passes the Python driver's output on to its own stdout.
        finished = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            if finished.returncode != 0 or not written.is_file():
                last = [line for line in finished.stdout.splitlines() if "consentgate" in line][-1:] or ["no message"]
                raise SystemExit(f"class archive: not written ({last[0][:200]})")
            os.replace(written, target)
        finally:
            written.unlink(missing_ok=True)
            shutil.rmtree(lake, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["train"]:
        train(sys.argv[2])
    else:
        build(Path(sys.argv[1]))
