"""Quarantined rows are raw personal data: kept owner-only, and only for the policy's
``quarantine_retention_days`` (default 30). Each enforce run removes the dataset's
quarantine folders (rows and failed outputs) last written longer ago than that."""

from __future__ import annotations

import time

from pyspark.sql import SparkSession

from transforms.fs import list_dirs, modified_at, remove
from transforms.lake import Lake
from transforms.policy import Policy

SECONDS_PER_DAY = 86_400


def expire_quarantine(spark: SparkSession, lake: Lake, policy: Policy, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    cutoff = now - policy.quarantine_retention_days * SECONDS_PER_DAY
    expired = []
    for run in list_dirs(spark, lake.quarantine(policy.dataset)):
        folder = lake.quarantine_run(policy.dataset, run)
        parts = [folder] + [f"{folder}/{name}" for name in list_dirs(spark, folder)]
        newest = max(modified_at(spark, part) for part in parts)
        if newest < cutoff:
            remove(spark, folder)
            expired.append(run)
    return expired
