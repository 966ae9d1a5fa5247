"""Replacing the rows of the subjects whose verdict changed, in periods where nothing
else changed since the current version.

An anonymised row publishes no subject key, so a subject's anonymised rows cannot be
found by its subject. But in such a period a row's output is a function of the row and
its subject's verdict alone (the policy, keys, input and retention status are those of
the current version): judging the changed subjects' rows again under the verdict the
ledger recorded gives exactly the rows that version published for them. Those are
removed as a multiset (two identical rows of different subjects are interchangeable),
and the same rows judged under the new verdict take their place. What was not found
(output that differs from what was published) leaves the period with more rows than its
counts say it publishes, which stops the run (``run_enforce`` compares them).
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

_ROW_HASH = "_cg_row_hash"


def replace_rows(published: DataFrame, before: DataFrame, now: DataFrame) -> DataFrame:
    """``published`` minus the rows of ``before`` (each once) plus those of ``now``."""
    columns = now.columns
    published, before = published.select(*columns), before.select(*columns)
    row_hash = F.xxhash64(*[F.col(c) for c in columns])
    # Only rows hashing like one to remove take part in the multiset difference (its
    # shuffle); the rest pass through a broadcast anti-join without moving.
    removable = F.broadcast(before.select(row_hash.alias(_ROW_HASH)).distinct())
    hashed = published.withColumn(_ROW_HASH, row_hash)
    untouched = hashed.join(removable, on=_ROW_HASH, how="left_anti").drop(_ROW_HASH)
    candidates = hashed.join(removable, on=_ROW_HASH, how="left_semi").drop(_ROW_HASH)
    return untouched.unionByName(candidates.exceptAll(before)).unionByName(now)
