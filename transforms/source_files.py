"""The source's files, and which periods each holds: what lets an incremental run read
only the files that changed and those holding the periods it judges again.

A file is known by its path under the source folder, its size and its modification
time (a rewritten or appended file changes one of them, as Spark writes new file names
on every write), and on a local lake also by its inode and status-change time: a file
replaced in place under the same name, size and modification time (``cp -p``, ``rsync
-a``, ``touch -r``) gets a new inode or a new change time, which no tool can set back.
For each file the ledger keeps its rows per period (all of them, including rows after
``t``, so that a file holding next month's orders is known to hold them), and how many
of its rows are unjudgeable (no subject or no event time: the quarantine's rows, found
again by every run).
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlparse

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from transforms.fs import filesystem
from transforms.lake import is_local, local_path
from transforms.partitions import event_instant
from transforms.policy import Policy
from transforms.subjects import key_text, policy_subject, starts_like_a_key

FILE = "_cg_source_file"
_PERIOD = "_cg_file_period"
_UNJUDGEABLE = "_cg_unjudgeable"


def _under(path: str, base: str) -> str:
    """``path`` (a decoded file-system path) under the folder ``base``."""
    if not path.startswith(base.rstrip("/") + "/"):
        raise ValueError("a source file is not under the source folder")
    return path[len(base.rstrip("/")) + 1 :]


def source_path(spark: SparkSession, root: str) -> str:
    """The source folder's decoded path, as its files' paths start."""
    folder, fs = filesystem(spark, root)
    return str(fs.makeQualified(folder).toUri().getPath())


def list_source_files(spark: SparkSession, root: str) -> dict[str, list]:
    """``{path under root: [size, modification time in ms, identity]}`` of every data file
    Spark reads (``local_identity``; None off a local lake)."""
    # Spark's own listing, in one query: a file reader lists exactly what the Parquet
    # reader reads (it skips _SUCCESS, checksums, _temporary/, files being copied in,
    # empty files), where listing through Py4J cost several calls a file (0.8 s of a
    # small run over 37 files and their checksums). A file removed meanwhile is left out,
    # and its periods count as changed.
    base = source_path(spark, root)
    listing = (
        spark.read.format("binaryFile")
        .option("ignoreMissingFiles", "true")
        .load(root)
        .select(
            F.col("_metadata.file_path").alias("path"),
            F.col("_metadata.file_size").alias("size"),
            F.unix_millis(F.col("_metadata.file_modification_time")).alias("modified"),
        )
        .collect()
    )
    files = {_relative(row["path"], base): [int(row["size"]), int(row["modified"])] for row in listing}
    folder = local_path(root.rstrip("/")) if is_local(root) else None
    return {name: [*stat, local_identity(f"{folder}/{name}") if folder else None] for name, stat in files.items()}


# What the ledger keeps of each file to tell whether it changed, in the listing's order.
FINGERPRINT = ("size", "modified", "identity")


def fingerprint_of(entry: dict) -> list:
    """A ledger entry's fingerprint, comparable with ``list_source_files``' values."""
    return [entry.get(name) for name in FINGERPRINT]


def with_fingerprint(counted: dict, listed: list) -> dict:
    """A file's counts with its fingerprint as ``list_source_files`` gave it."""
    return {**counted, **dict(zip(FINGERPRINT, listed, strict=True))}


def local_identity(path: str) -> str | None:
    """``inode:change time in ns`` of a local file (None once it is gone). Replacing or
    rewriting a file changes one of them, whatever its name, size and modification time;
    so do a chmod, a chown and a new hard link, after which a run judges the file's periods
    again as for a changed file."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return f"{status.st_ino}:{status.st_ctime_ns}"


def _relative(uri: str, base: str) -> str:
    """A file's path as Spark gives it (a URI, escaped), under the decoded folder ``base``."""
    return _under(unquote(urlparse(uri).path), base)


def with_source_file(source: DataFrame) -> DataFrame:
    """Adds each row's file (its full path); ``source`` must be read straight from the files."""
    return source.withColumn(FILE, F.col("_metadata.file_path"))


def has_no_event_time(policy: Policy) -> Column:
    return event_instant(policy).isNull()


def may_be_unjudgeable(policy: Policy) -> Column:
    """Cheap, and true for every row with no subject or no event time (and a few more)."""
    return has_no_event_time(policy) | ~starts_like_a_key(key_text(policy))


def is_unjudgeable(policy: Policy) -> Column:
    """Whether a source row has no subject or no event time (it is quarantined); costly:
    apply it to the rows ``may_be_unjudgeable`` keeps."""
    return has_no_event_time(policy) | policy_subject(policy).isNull()


def count_source(rows: DataFrame, period, is_input, policy: Policy, base: str, no_period: str):
    """``({file: {"periods": {period: rows}, "unjudgeable": rows}}, {period: input rows})``
    of ``rows`` (which carry ``FILE``), files under the folder ``base`` (``source_path``),
    periods as ``YYYY-MM-DD`` (``no_period`` for rows with no event time): per file every
    row, whatever its time; per period the run's input rows (``is_input``)."""
    # Normalised in a projection (no aggregate may hold the reflective call) and only
    # where the cheap test cannot tell.
    unjudgeable = F.when(may_be_unjudgeable(policy), is_unjudgeable(policy)).otherwise(F.lit(False))
    # As text: a faulty event time past year 9999 has a period but no Python date.
    counted = (
        rows.withColumn(_UNJUDGEABLE, unjudgeable)
        .groupBy(FILE, period.cast("string").alias(_PERIOD))
        .agg(
            F.count("*").alias("rows"),
            F.count_if(_UNJUDGEABLE).alias("unjudgeable"),
            F.count_if(is_input).alias("input"),
        )
        .collect()
    )
    files: dict[str, dict] = {}
    inputs: dict[str, int] = {}
    for row in counted:
        entry = files.setdefault(_relative(row[FILE], base), {"periods": {}, "unjudgeable": 0})
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
