"""The published table's partitions: one folder per period of the event time
(``<event_time>_<period>=YYYY-MM-DD``), for policies that set ``partition_by``.

A partition's value is the first day of its period, the same value the event time's
rules publish at that granularity, so the folder names disclose nothing the rows do not.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F

from transforms.fs import list_dirs
from transforms.policy import Policy


def event_instant(policy: Policy) -> Column:
    """Each row's event time as an instant (a date is its midnight, UTC); null when missing."""
    return F.col(policy.event_time).cast("timestamp")


def period_of(policy: Policy) -> Column:
    """The partition value of a row: the first day of its event time's period (UTC)."""
    return F.to_date(F.date_trunc(policy.partition_by, event_instant(policy)))


def period_start(policy: Policy, moment: datetime | date) -> date:
    day = moment.date() if isinstance(moment, datetime) else moment
    if policy.partition_by == "year":
        return day.replace(month=1, day=1)
    if policy.partition_by == "month":
        return day.replace(day=1)
    return day


def periods_between(policy: Policy, start: datetime, end: datetime) -> set[date]:
    """The periods that hold an instant of ``[start, end)``."""
    if end <= start:
        return set()
    periods, day, last = set(), start.date(), (end - timedelta(microseconds=1)).date()
    while day <= last:
        periods.add(period_start(policy, day))
        day += timedelta(days=1)
    return periods


def folder_name(policy: Policy, period: date) -> str:
    return f"{policy.partition_column}={period.isoformat()}"


def partition_folders(spark: SparkSession, folder: str) -> dict[str, str]:
    """``{folder name: column}`` of a written table's partition folders (``name=value``)."""
    return {name: name.split("=", 1)[0] for name in list_dirs(spark, folder) if "=" in name}


def partition_columns(spark: SparkSession, folder: str) -> list[str]:
    """The partition columns of a written table (none for one that is not partitioned)."""
    return sorted(set(partition_folders(spark, folder).values()))
