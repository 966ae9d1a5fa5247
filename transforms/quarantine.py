"""Quarantined rows are raw personal data: kept owner-only, and only for the policy's
``quarantine_retention_days`` (default 30). Each enforce run removes the dataset's
quarantine folders (rows and failed outputs) written longer ago than that, and the
staged outputs of runs that never published (stopped, failed or refused before
publishing), which hold the run's personal data as published rows would.

When a run writes its quarantine it touches ``_written_at`` beside it: an erasure purge
rewrites the rows later, which must not restart the other rows' clock. Folders from
before that marker are aged by their newest part."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession

from transforms.fs import exists, list_dirs, modified_at, remove
from transforms.lake import Lake
from transforms.policy import Policy
from transforms.storage import private_folder, restrict_to_owner, write_text

SECONDS_PER_DAY = 86_400


def expire_quarantine(spark: SparkSession, lake: Lake, policy: Policy, now: float | None = None) -> list[str]:
    cutoff = _cutoff(policy, now)
    expired = []
    for run in list_dirs(spark, lake.quarantine(policy.dataset)):
        folder = lake.quarantine_run(policy.dataset, run)
        if exists(spark, _written_marker(folder)):
            written = modified_at(spark, _written_marker(folder))
        else:
            parts = [folder] + [f"{folder}/{name}" for name in list_dirs(spark, folder)]
            written = max(modified_at(spark, part) for part in parts)
        if written < cutoff:
            remove(spark, folder)
            expired.append(run)
    return expired


def _cutoff(policy: Policy, now: float | None) -> float:
    """The instant before which what a run wrote has been kept long enough."""
    return (time.time() if now is None else now) - policy.quarantine_retention_days * SECONDS_PER_DAY


@contextmanager
def writing_quarantine(lake: Lake, dataset: str, run_id: str) -> Iterator[None]:
    """Around the step that writes a run's quarantine (its rows, its failed output): the
    run's folder is owner-only before anything is written into it (Spark creates its files
    with the default modes), and once written its clock starts and its files are
    tightened too."""
    folder = lake.quarantine_run(dataset, run_id)
    private_folder(folder)
    yield
    write_text(_written_marker(folder), "")
    restrict_to_owner(folder)


def _written_marker(run_folder: str) -> str:
    return f"{run_folder}/_written_at"


def expire_staged_outputs(
    spark: SparkSession, lake: Lake, policy: Policy, run_id: str, now: float | None = None
) -> list[str]:
    """Removes the staged output (and staged ledger) of every other run enforced longer
    ago than ``quarantine_retention_days``; its step states stay, for its report."""
    cutoff = _cutoff(policy, now)
    expired = []
    for run in list_dirs(spark, lake.path("staging", policy.dataset)):
        staged = lake.staging_data(policy.dataset, run)
        if run == run_id or not exists(spark, staged):
            continue
        enforced = lake.step_state(policy.dataset, run, "enforce")
        written = modified_at(spark, enforced if exists(spark, enforced) else staged)
        if written < cutoff:
            remove(spark, staged)
            remove(spark, lake.staged_ledger(policy.dataset, run))
            expired.append(run)
            if policy.is_share:
                from transforms.share import log_not_exported

                log_not_exported(lake, policy.dataset, run, "its staged output expired before it was published")
    return expired
