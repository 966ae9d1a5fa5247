"""Right to erasure: requests, tombstones, and purging what was written before.

An erasure request (``raw/erasure_requests``) is effective when ``requested_at <= t``.
Each effective request becomes a *tombstone*: the keyed pseudonym (HMAC) of the
normalised subject key, kept under ``tombstones/<dataset>/`` so that the subject stays
erased after the request log is purged and when the same subject is ingested again. A
tombstone holds no raw id. The tombstones of every dataset apply to every dataset and to
every later run, whatever its run date: an erased subject is never published again.

When a run finds erased subjects that its dataset has no tombstone for yet, it first
purges them from every retained published version of the dataset, from staged outputs,
failed outputs and the quarantine, then writes the dataset's tombstones (so a purge that
stops half way is repeated by the next run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from transforms import schemas
from transforms.consent import SUBJECT, instant
from transforms.fs import exists, list_dirs, move, remove
from transforms.lake import Lake, judged_at_marker, judgement_instant
from transforms.policy import Policy
from transforms.pseudonym import Pseudonymizer
from transforms.storage import read_text, write_text
from transforms.subjects import normalize_subject

SUBJECT_HASH = "_cg_subject_hash"
TOMBSTONE_COLUMNS = f"{SUBJECT_HASH} string, erased_at timestamp"


def with_subject_hash(rows: DataFrame, pseudonymizer: Pseudonymizer, subject: str = SUBJECT) -> DataFrame:
    """Adds the keyed pseudonym of the normalised subject (rows must carry the pads)."""
    return rows.withColumn(SUBJECT_HASH, pseudonymizer.hmac_hex(F.col(subject)))


def request_hashes(requests: DataFrame, policy: Policy, run_date: date, pseudonymizer: Pseudonymizer) -> DataFrame:
    """Keyed pseudonyms of the subjects whose request is effective at ``t`` (no time: at once)."""
    t = judgement_instant(run_date)
    effective = requests.filter(F.col("requested_at").isNull() | (F.col("requested_at") <= instant(t)))
    subjects = effective.select(
        normalize_subject(F.col("subject_id"), policy.subject_key_normalize).alias(SUBJECT),
        F.coalesce(F.col("requested_at"), instant(t)).alias("erased_at"),
    ).filter(F.col(SUBJECT).isNotNull())
    hashed = Pseudonymizer.detach(with_subject_hash(pseudonymizer.attach(subjects), pseudonymizer))
    return hashed.groupBy(SUBJECT_HASH).agg(F.min("erased_at").alias("erased_at"))


def _read_fail_closed(spark: SparkSession, path: str) -> DataFrame | None:
    """Absent is fine; present but unreadable stops the run (it would un-erase subjects)."""
    return schemas.read_parquet(spark, path, required=False, empty_is_absent=False)


def read_tombstones(spark: SparkSession, lake: Lake, dataset: str | None = None) -> DataFrame:
    """One dataset's tombstones, or (``dataset=None``) those of every dataset."""
    empty = spark.createDataFrame([], TOMBSTONE_COLUMNS)
    if dataset is not None:
        found = _read_fail_closed(spark, lake.tombstones_of(dataset))
        return empty if found is None else found.select(SUBJECT_HASH, "erased_at")
    every = empty
    for name in list_dirs(spark, lake.tombstones):
        found = _read_fail_closed(spark, lake.tombstones_of(name))
        if found is not None:
            every = every.unionByName(found.select(SUBJECT_HASH, "erased_at"))
    return every


@dataclass
class ErasureState:
    """The run's erased subjects, and those not tombstoned before this run."""

    erased: DataFrame  # SUBJECT_HASH, erased_at
    new: DataFrame
    purged_versions: list[str] = field(default_factory=list)
    purged_quarantine: list[str] = field(default_factory=list)
    purged_staging: list[str] = field(default_factory=list)
    new_tombstones: int = 0


def erasure_state(
    spark: SparkSession, lake: Lake, policy: Policy, run_date: date, pseudonymizer: Pseudonymizer
) -> ErasureState:
    requests = _read_fail_closed(spark, lake.erasure_requests)
    erased = read_tombstones(spark, lake)
    if requests is not None:
        schemas.require_columns(requests, lake.erasure_requests, schemas.ERASURE_COLUMNS)
        erased = erased.unionByName(request_hashes(requests, policy, run_date, pseudonymizer))
    erased = erased.groupBy(SUBJECT_HASH).agg(F.min("erased_at").alias("erased_at")).cache()
    own = read_tombstones(spark, lake, policy.dataset)
    # Materialised now: the tombstones this run appends must not change what it calls new.
    new = erased.join(own.select(SUBJECT_HASH), on=SUBJECT_HASH, how="left_anti").cache()
    new.count()
    return ErasureState(erased=erased, new=new)


def _rewrite_without(spark: SparkSession, folder: str, keep, replacement: str) -> bool:
    """Writes ``folder`` minus the rows ``keep`` rejects to ``replacement``; False if none matched.

    The folder's judgement instant marker goes along, so a purged version keeps its ``t``.
    """
    rows = spark.read.parquet(folder)
    remaining = keep(rows)
    if remaining.count() == rows.count():
        return False
    remaining.write.mode("overwrite").parquet(replacement)
    marker = read_text(judged_at_marker(folder))
    if marker is not None:
        write_text(judged_at_marker(replacement), marker)
    return True


def _purge_in_place(spark: SparkSession, folder: str, keep, replacement: str) -> bool:
    """Replaces ``folder`` by its purged copy when ``keep`` rejected rows; for folders no
    reader holds on to (older versions, staging, quarantine)."""
    if not exists(spark, folder) or not _rewrite_without(spark, folder, keep, replacement):
        return False
    remove(spark, folder)
    move(spark, replacement, folder)
    return True


def purge_published(
    spark: SparkSession, lake: Lake, policy: Policy, state: ErasureState, pseudonymizer: Pseudonymizer
) -> None:
    """Removes newly erased subjects from retained versions, failed outputs and quarantine."""
    new_hashes = state.new.select(SUBJECT_HASH).distinct().cache()
    if new_hashes.isEmpty():
        return
    subject_column = policy.column(policy.subject_key)
    rule = subject_column.consented.name if subject_column else "drop"

    def keep_published(rows: DataFrame) -> DataFrame:
        if policy.subject_key not in rows.columns or rule == "drop":
            return rows  # nothing in these rows links to a subject
        erased = F.broadcast(new_hashes.withColumnRenamed(SUBJECT_HASH, "_cg_erased"))
        if rule == "pseudonymize":
            return rows.join(erased, F.col(policy.subject_key) == F.col("_cg_erased"), "left_anti")
        # The normalised key is published as it is: compare its pseudonym.
        hashed = with_subject_hash(pseudonymizer.attach(rows), pseudonymizer, policy.subject_key)
        kept = hashed.join(erased, F.col(SUBJECT_HASH) == F.col("_cg_erased"), "left_anti")
        return Pseudonymizer.detach(kept).drop(SUBJECT_HASH)

    def keep_raw(rows: DataFrame) -> DataFrame:
        subjects = rows.withColumn(
            SUBJECT, normalize_subject(F.col(policy.subject_key).cast("string"), policy.subject_key_normalize)
        )
        hashed = with_subject_hash(pseudonymizer.attach(subjects), pseudonymizer)
        return Pseudonymizer.detach(hashed.join(new_hashes, on=SUBJECT_HASH, how="left_anti")).drop(
            SUBJECT, SUBJECT_HASH
        )

    from transforms.publish import current_version, repoint_current

    current = current_version(lake, policy.dataset)
    versions = list_dirs(spark, lake.clean(policy.dataset))
    for version in versions:
        folder = lake.clean_version(policy.dataset, version)
        # A name no folder has: a purge repeated after a crash never overwrites a live one.
        purged = next(
            f"{version}.erased{n or ''}"
            for n in range(len(versions) + 1)
            if f"{version}.erased{n or ''}" not in versions
        )
        replacement = lake.clean_version(policy.dataset, purged)
        if version != current:
            if _purge_in_place(spark, folder, keep_published, replacement):
                state.purged_versions.append(version)
        elif _rewrite_without(spark, folder, keep_published, replacement):
            # Readers move to the purged copy atomically, then the old one goes.
            repoint_current(spark, lake, policy.dataset, purged)
            remove(spark, folder)
            state.purged_versions.append(purged)

    for run in list_dirs(spark, lake.path("staging", policy.dataset)):
        folder = lake.staging_data(policy.dataset, run)
        if _purge_in_place(spark, folder, keep_published, f"{folder}.erased"):
            state.purged_staging.append(run)

    for run in list_dirs(spark, lake.quarantine(policy.dataset)):
        for folder, keep in (
            (lake.quarantine_rows(policy.dataset, run), keep_raw),
            (lake.failed_output(policy.dataset, run), keep_published),
        ):
            if _purge_in_place(spark, folder, keep, f"{folder}.erased"):
                state.purged_quarantine.append(f"{run}/{folder.rsplit('/', 1)[-1]}")


def record_tombstones(lake: Lake, dataset: str, state: ErasureState) -> None:
    new = state.new.select(SUBJECT_HASH, "erased_at")
    state.new_tombstones = new.count()
    if state.new_tombstones:
        new.write.mode("append").parquet(lake.tombstones_of(dataset))
