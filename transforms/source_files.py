"""The source's files, and which periods each holds: what lets an incremental run read
only the files that changed and those holding the periods it judges again.

A file is known by its path under the source folder, its size and its modification
time (a rewritten or appended file changes one of them, as Spark writes new file names
on every write). For each file the ledger keeps its rows per period (all of them,
including rows after ``t``, so that a file holding next month's orders is known to hold
them), and how many of its rows are unjudgeable (no subject or no event time: the
quarantine's rows, found again by every run).
"""

from __future__ import annotations

from urllib.parse import unquote, urlparse

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from transforms.consent import SUBJECT
from transforms.policy import Policy

FILE = "_cg_source_file"
_PERIOD = "_cg_file_period"


def _under(path: str, base: str) -> str:
    """``path`` (a decoded file-system path) under the folder ``base``."""
    if not path.startswith(base.rstrip("/") + "/"):
        raise ValueError("a source file is not under the source folder")
    return path[len(base.rstrip("/")) + 1 :]


def _hidden(relative: str) -> bool:
    # Spark skips these when it reads a folder: _SUCCESS, .crc files, _temporary/, and
    # files still being copied in.
    parts = relative.split("/")
    return relative.endswith("._COPYING_") or any(
        part.startswith(".") or (part.startswith("_") and "=" not in part) for part in parts
    )


def _folder(spark: SparkSession, root: str):
    folder = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(root)
    return folder, folder.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def source_path(spark: SparkSession, root: str) -> str:
    """The source folder's decoded path, as its files' paths start."""
    folder, fs = _folder(spark, root)
    return str(fs.makeQualified(folder).toUri().getPath())


def list_source_files(spark: SparkSession, root: str) -> dict[str, list[int]]:
    """``{path under root: [size, modification time in ms]}`` of every data file Spark reads."""
    folder, fs = _folder(spark, root)
    base = str(fs.makeQualified(folder).toUri().getPath())
    files: dict[str, list[int]] = {}
    listing = fs.listFiles(folder, True)
    while listing.hasNext():
        status = listing.next()
        relative = _under(str(status.getPath().toUri().getPath()), base)
        if not _hidden(relative):
            files[relative] = [int(status.getLen()), int(status.getModificationTime())]
    return files


def with_source_file(source: DataFrame) -> DataFrame:
    """Adds each row's file (its full path); ``source`` must be read straight from the files."""
    return source.withColumn(FILE, F.col("_metadata.file_path"))


def count_source(rows: DataFrame, period, is_input, policy: Policy, base: str, no_period: str):
    """``({file: {"periods": {period: rows}, "unjudgeable": rows}}, {period: input rows})``
    of ``rows`` (which carry ``FILE`` and ``SUBJECT``), files under the folder ``base``
    (``source_path``), periods as ``YYYY-MM-DD`` (``no_period`` for rows with no event
    time): per file every row, whatever its time; per period the run's input rows
    (``is_input``)."""
    unjudgeable = F.col(SUBJECT).isNull() | F.col(policy.event_time).cast("timestamp").isNull()
    # As text: a faulty event time past year 9999 has a period but no Python date.
    counted = (
        rows.groupBy(FILE, period.cast("string").alias(_PERIOD))
        .agg(
            F.count("*").alias("rows"),
            F.count_if(unjudgeable).alias("unjudgeable"),
            F.count_if(is_input).alias("input"),
        )
        .collect()
    )
    files: dict[str, dict] = {}
    inputs: dict[str, int] = {}
    for row in counted:
        # Spark gives each file's path as a URI (escaped), Hadoop's listing decoded.
        entry = files.setdefault(_under(unquote(urlparse(row[FILE]).path), base), {"periods": {}, "unjudgeable": 0})
        name = no_period if row[_PERIOD] is None else row[_PERIOD]
        entry["periods"][name] = int(row["rows"])
        entry["unjudgeable"] += int(row["unjudgeable"])
        if row["input"]:
            inputs[name] = inputs.get(name, 0) + int(row["input"])
    return files, inputs


def read_files(spark: SparkSession, root: str, schema, files) -> DataFrame:
    """The rows of some of the source's files, with the schema (and partition columns) of
    the whole source."""
    base = root.rstrip("/")
    paths = [f"{base}/{name}" for name in sorted(files)]
    if not paths:
        return spark.createDataFrame([], schema)
    return spark.read.schema(schema).option("basePath", base).parquet(*paths)
