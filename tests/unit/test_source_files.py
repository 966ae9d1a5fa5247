"""The source's file inventory: the files Spark reads, named the same way whether listed
or counted from the rows, so that an incremental run finds what changed."""

from __future__ import annotations

import shutil
from datetime import date

import yaml
from pyspark.sql import functions as F

from transforms.incremental import NO_PERIOD, _periods
from transforms.policy import parse_policy
from transforms.source_files import (
    FILE,
    _relative,
    count_source,
    list_source_files,
    read_files,
    source_path,
    with_source_file,
)

POLICY = """
dataset: events
source: raw/events
subject_key: customer_id
event_time: at
purpose: analytics
on_no_consent: drop
partition_by: month
columns:
  customer_id: {consented: pseudonymize, anonymized: drop}
  at: {consented: keep, anonymized: generalize:month}
"""


def test_the_listing_holds_exactly_the_files_spark_reads(spark, tmp_path):
    root = tmp_path / "raw"
    rows = spark.createDataFrame([("C1", 1), ("C2", 2)], "customer_id string, p int")
    rows.repartition(1).write.partitionBy("p").parquet(str(root))  # with _SUCCESS and .crc files
    data = sorted(root.rglob("part-*.parquet"))
    assert len(data) == 2
    # Spark skips files being copied in, _temporary/ and empty files.
    shutil.copy(data[0], data[0].with_name(data[0].name + "._COPYING_"))
    (root / "_temporary" / "0").mkdir(parents=True)
    shutil.copy(data[0], root / "_temporary" / "0" / "part-9.parquet")
    (root / "p=1" / "part-empty.parquet").write_bytes(b"")
    listed = list_source_files(spark, str(root))
    base = source_path(spark, str(root))
    read = {_relative(r[0], base) for r in with_source_file(spark.read.parquet(str(root))).select(FILE).collect()}
    assert set(listed) == read == {str(path.relative_to(root)) for path in data}
    for path in data:
        status = path.stat()
        identity = f"{status.st_ino}:{status.st_ctime_ns}"
        assert listed[str(path.relative_to(root))] == [status.st_size, status.st_mtime_ns // 1_000_000, identity]


def test_periods_past_year_9999_and_rows_without_time_are_never_judged():
    assert _periods(["2026-11-01", NO_PERIOD, "+10000-01-01"]) == {date(2026, 11, 1)}


def test_listed_and_counted_files_have_the_same_names_even_with_escaped_folder_names(spark, tmp_path):
    policy = parse_policy(yaml.safe_load(POLICY), "events.yml")
    root = str(tmp_path / "raw events")
    rows = spark.createDataFrame(
        [
            ("C1", "2026-11-02 10:00:00", "a b:c"),
            (None, "2026-10-01 00:00:00", "x%y"),
            ("C2", None, "x%y"),
            # Blank keys: no subject, found only by normalising them.
            ("   ", "2026-10-01 00:00:00", "a b:c"),
            ("\u00a0", "2026-10-01 00:00:00", "x%y"),
        ],
        "customer_id string, at string, kind string",
    ).withColumn("at", F.to_timestamp("at"))
    rows.coalesce(1).write.partitionBy("kind").parquet(root)  # one file per folder
    listed = list_source_files(spark, root)
    assert len(listed) == 2
    assert all(size > 0 and modified > 0 and identity for size, modified, identity in listed.values())
    source = with_source_file(spark.read.parquet(root))
    period = F.to_date(F.date_trunc("month", F.col("at")))
    is_input = F.col("at").isNull() | (F.col("at") < F.lit("2026-11-02 12:00:00").cast("timestamp"))
    files, inputs = count_source(source, period, is_input, policy, source_path(spark, root), NO_PERIOD)
    assert set(files) == set(listed)
    by_kind = {name.split("/")[0]: entry for name, entry in files.items()}
    assert by_kind["kind=a b%3Ac"] == {"periods": {"2026-11-01": 1, "2026-10-01": 1}, "unjudgeable": 1}
    assert by_kind["kind=x%25y"] == {"periods": {"2026-10-01": 2, NO_PERIOD: 1}, "unjudgeable": 3}
    assert inputs == {"2026-11-01": 1, "2026-10-01": 3, NO_PERIOD: 1}
    # A file read again by its listed name gives its rows back.
    (name,) = [n for n in listed if n.startswith("kind=a b")]
    again = read_files(spark, root, spark.read.parquet(root).schema, [name]).collect()
    assert sorted(r.customer_id for r in again) == ["   ", "C1"]
