"""Right to erasure: requests, tombstones, and purging what was written before.

An erasure request (``raw/erasure_requests``) is effective when ``requested_at <= t``.
Each effective request becomes a *tombstone*: the keyed pseudonym (HMAC) of the
normalised subject key, kept under ``tombstones/`` so that the subject stays erased
after the request log is purged and when the same subject is ingested again. A
tombstone holds no raw id. Tombstones apply to every later run, whatever its run date:
an erased subject is never published again.

When a run finds subjects that are not tombstoned yet, it first purges them from every
retained published version of the dataset, from failed outputs and from the quarantine,
then writes their tombstones (so a purge that stops half way is repeated by the next run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from transforms import schemas
from transforms.consent import SUBJECT, instant
from transforms.fs import exists, list_dirs, move, remove
from transforms.lake import Lake, judgement_instant
from transforms.policy import Policy
from transforms.pseudonym import Pseudonymizer
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


def read_tombstones(spark: SparkSession, lake: Lake) -> DataFrame:
    tombstones = schemas.read_parquet(spark, lake.tombstones, required=False)
    return tombstones if tombstones is not None else spark.createDataFrame([], TOMBSTONE_COLUMNS)


@dataclass
class ErasureState:
    """The run's erased subjects, and those not tombstoned before this run."""

    erased: DataFrame  # SUBJECT_HASH, erased_at
    new: DataFrame
    purged_versions: list[str] = field(default_factory=list)
    purged_quarantine: list[str] = field(default_factory=list)
    new_tombstones: int = 0


def erasure_state(
    spark: SparkSession, lake: Lake, policy: Policy, run_date: date, pseudonymizer: Pseudonymizer
) -> ErasureState:
    requests = schemas.read_parquet(spark, lake.erasure_requests, required=False)
    tombstones = read_tombstones(spark, lake)
    if requests is None:
        return ErasureState(erased=tombstones, new=spark.createDataFrame([], TOMBSTONE_COLUMNS))
    schemas.require_columns(requests, lake.erasure_requests, schemas.ERASURE_COLUMNS)
    requested = request_hashes(requests, policy, run_date, pseudonymizer).cache()
    # Materialised now: the tombstones this run appends must not change what it calls new.
    new = requested.join(tombstones.select(SUBJECT_HASH), on=SUBJECT_HASH, how="left_anti").cache()
    new.count()
    erased = requested.unionByName(tombstones).groupBy(SUBJECT_HASH).agg(F.min("erased_at").alias("erased_at"))
    return ErasureState(erased=erased, new=new)


def _rewrite_without(spark: SparkSession, folder: str, keep, replacement: str) -> bool:
    """Writes ``folder`` minus the rows ``keep`` rejects to ``replacement``; False if none matched."""
    rows = spark.read.parquet(folder)
    remaining = keep(rows)
    if remaining.count() == rows.count():
        return False
    remaining.write.mode("overwrite").parquet(replacement)
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
    for version in list_dirs(spark, lake.clean(policy.dataset)):
        folder = lake.clean_version(policy.dataset, version)
        replacement = f"{folder}.erased"
        if _rewrite_without(spark, folder, keep_published, replacement):
            if version == current:
                # Readers move to the purged copy atomically, then the old one goes.
                repoint_current(spark, lake, policy.dataset, f"{version}.erased")
                remove(spark, folder)
            else:
                remove(spark, folder)
                move(spark, replacement, folder)
                state.purged_versions.append(version)
                continue
            state.purged_versions.append(f"{version}.erased")

    for run in list_dirs(spark, lake.quarantine(policy.dataset)):
        for folder, keep in (
            (lake.quarantine_rows(policy.dataset, run), keep_raw),
            (lake.failed_output(policy.dataset, run), keep_published),
        ):
            if exists(spark, folder) and _rewrite_without(spark, folder, keep, f"{folder}.erased"):
                remove(spark, folder)
                move(spark, f"{folder}.erased", folder)
                state.purged_quarantine.append(f"{run}/{folder.rsplit('/', 1)[-1]}")


def record_tombstones(lake: Lake, state: ErasureState) -> None:
    new = state.new.select(SUBJECT_HASH, "erased_at")
    state.new_tombstones = new.count()
    if state.new_tombstones:
        new.write.mode("append").parquet(lake.tombstones)
