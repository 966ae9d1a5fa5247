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

Each tombstone records the fingerprint of the key it was made with. After a key
rotation, tombstones made with a retired key still match: the run hashes every row's
subject with that key too, which is why a retired key stays in
``CONSENTGATE_HMAC_PREVIOUS_KEYS`` as long as tombstones made with it exist. A tombstone
whose key the run does not have stops the run (it would un-erase a subject).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from transforms import schemas
from transforms.consent import SUBJECT, instant
from transforms.errors import MissingKeyError, PolicyError, unreadable_file
from transforms.fs import exists, list_dirs, move, remove
from transforms.key_continuity import fingerprint_of, recorded_keys
from transforms.keys import PREVIOUS_KEYS_ENV, SecretKey
from transforms.lake import (
    Lake,
    is_purged_copy_of,
    judgement_instant,
    output_markers,
    purged_copy_name,
    split_export,
)
from transforms.partitions import partition_columns
from transforms.policy import STATE_COLUMN, Policy
from transforms.pseudonym import Pseudonymizer
from transforms.share import as_recipient_pseudonyms, purged_export_entry
from transforms.steps import PURGED_FOR_ERASURE
from transforms.storage import (
    append_stamped_line_once,
    delete,
    private_folder,
    read_text,
    restrict_to_owner,
    write_json,
    write_text,
)
from transforms.subject_record import SubjectRecord, read_subject_record
from transforms.subjects import normalize_subject, policy_subject

SUBJECT_HASH = "_cg_subject_hash"
_UNCHANGED = object()  # a folder this run has nothing to purge from
_UNSEARCHABLE = object()  # a folder whose rows link to subjects this run cannot tell apart
KEY_FINGERPRINT = "key_fingerprint"
NORMALIZATION = "subject_key_normalize"
TOMBSTONE_COLUMNS = f"{SUBJECT_HASH} string, erased_at timestamp, {KEY_FINGERPRINT} string, {NORMALIZATION} string"


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
    hashed = pseudonymizer.detach(with_subject_hash(pseudonymizer.attach(subjects), pseudonymizer))
    return hashed.groupBy(SUBJECT_HASH).agg(F.min("erased_at").alias("erased_at"))


def _read_fail_closed(spark: SparkSession, path: str, schema: str | None = None) -> DataFrame | None:
    """Absent is fine; present but unreadable, even one damaged file, stops the run (it
    would un-erase subjects)."""
    found = schemas.read_parquet(spark, path, required=False, empty_is_absent=False, schema=schema)
    if found is not None:
        schemas.require_readable(found, path)
    return found


def read_tombstones(spark: SparkSession, lake: Lake, dataset: str | None = None) -> DataFrame:
    """One dataset's tombstones, or (``dataset=None``) those of every dataset. Tombstones
    written before they recorded their key have a null ``key_fingerprint``."""
    every = spark.createDataFrame([], TOMBSTONE_COLUMNS)
    for name in [dataset] if dataset is not None else list_dirs(spark, lake.tombstones):
        if not exists(spark, lake.tombstones_of(name)):
            continue
        found = _read_fail_closed(spark, lake.tombstones_of(name), TOMBSTONE_COLUMNS)
        if found is not None:
            every = every.unionByName(found.select(SUBJECT_HASH, "erased_at", KEY_FINGERPRINT, NORMALIZATION))
    return every


def _require_same_normalization(lake: Lake, policy: Policy, recorded: set[str | None]) -> None:
    """A tombstone is the hash of a key as its dataset normalised it: under another
    normalisation (``Ann-01`` against ``ann-01``) the subject's rows would not match it
    and, once the request log is purged, would be published again. (Tombstones written
    before they recorded it have none, and are matched as they are.)"""
    own = policy.normalization
    other = sorted(n for n in recorded if n is not None and n != own)
    if other:
        raise PolicyError(
            f"{policy.path}: subject_key_normalize: [{own}] differs from [{other[0]}], with which tombstones in "
            f"{lake.tombstones} were made; erased subjects would not be matched (every dataset of a lake must "
            "normalise subject keys alike)"
        )


def _made_with(fingerprint: str):
    """Tombstones made with the key of ``fingerprint``, or with an unrecorded key (which
    might be any key, so they are matched under every key the run has)."""
    return (F.col(KEY_FINGERPRINT) == fingerprint) | F.col(KEY_FINGERPRINT).isNull()


@dataclass
class ErasureState:
    """The run's erased subjects, and those not tombstoned before this run."""

    erased: DataFrame  # SUBJECT_HASH, erased_at: under the run's key
    new: DataFrame
    new_count: int = 0  # counted when ``new`` was materialised; the tombstones this run writes
    # Subjects erased under a retired key: that key's pseudonymiser and the hashes.
    retired: list[tuple[Pseudonymizer, DataFrame]] = field(default_factory=list)
    # Every erased subject's hash under a given key (for versions made with a retired key).
    erased_under: Callable[[Pseudonymizer], DataFrame] | None = None
    purged_versions: list[str] = field(default_factory=list)
    purged_quarantine: list[str] = field(default_factory=list)
    purged_staging: list[str] = field(default_factory=list)
    retired_versions: list[str] = field(default_factory=list)
    # Older versions in which an erased subject's rows cannot be found (their subject key
    # dropped, or normalised otherwise): removed, as nothing could purge them.
    unsearchable_versions: list[str] = field(default_factory=list)
    cached: list[DataFrame] = field(default_factory=list)

    def release(self) -> None:
        """Unpersists what the state cached: a process may run other jobs after this one
        (``consentgate run``, the benchmark), and each run caches its own. Last cached
        first: Spark re-plans a cached frame whose source is unpersisted before it."""
        for frame in reversed(self.cached):
            frame.unpersist()


def erasure_state(
    spark: SparkSession,
    lake: Lake,
    policy: Policy,
    run_date: date,
    pseudonymizer: Pseudonymizer,
    ring: dict[str, SecretKey] | None = None,
    find_new: bool = True,
) -> ErasureState:
    """The erased subjects at ``t``; with ``find_new``, also those this dataset has no
    tombstone for yet (what a run must purge and record; a reader such as ``explain``
    needs only who is erased)."""
    current = pseudonymizer.key.fingerprint
    ring = ring or {current: pseudonymizer.key}
    requests = _read_fail_closed(spark, lake.erasure_requests)
    if requests is not None:
        schemas.require_columns(requests, lake.erasure_requests, schemas.ERASURE_COLUMNS)
    tombstones = read_tombstones(spark, lake).cache()
    made_with = tombstones.select(KEY_FINGERPRINT, NORMALIZATION).distinct().collect()
    _require_same_normalization(lake, policy, {row[NORMALIZATION] for row in made_with})
    recorded = list({row[KEY_FINGERPRINT] for row in made_with})
    fingerprints = sorted(f for f in recorded if f is not None)
    if None in recorded:
        fingerprints = sorted(set(fingerprints) | set(ring))
    for fingerprint in fingerprints:
        if fingerprint not in ring:
            raise MissingKeyError(
                f"{lake.tombstones}: tombstones were made with key fingerprint {fingerprint}; "
                f"that key must be in {PREVIOUS_KEYS_ENV} for erased subjects to stay erased"
            )

    def erased_under(key_pseudonymizer: Pseudonymizer) -> DataFrame:
        fingerprint = key_pseudonymizer.key.fingerprint
        erased = tombstones.filter(_made_with(fingerprint)).select(SUBJECT_HASH, "erased_at")
        if requests is not None:
            erased = erased.unionByName(request_hashes(requests, policy, run_date, key_pseudonymizer))
        # One partition: the erased subjects are few next to the rows, and each scan of
        # them, cached, would otherwise take a task per shuffle partition (16 tasks took
        # 0.3-1.7 s a scan at 1M orders, about 1,000 erased subjects).
        return erased.groupBy(SUBJECT_HASH).agg(F.min("erased_at").alias("erased_at")).coalesce(1)

    erased = erased_under(pseudonymizer).cache()
    if find_new:
        own = read_tombstones(spark, lake, policy.dataset).filter(_made_with(current))
        # Materialised now: the tombstones this run appends must not change what it calls new.
        new = erased.join(own.select(SUBJECT_HASH), on=SUBJECT_HASH, how="left_anti").cache()
        new_count = new.count()
    else:
        new, new_count = erased.limit(0), 0
    retired = [
        (
            Pseudonymizer(spark, ring[fingerprint], tag=f"retired{index}"),
            tombstones.filter(_made_with(fingerprint)).select(SUBJECT_HASH).distinct(),
        )
        for index, fingerprint in enumerate(f for f in fingerprints if f != current)
    ]
    cached = [tombstones, erased, *([new] if find_new else [])]
    return ErasureState(
        erased=erased, new=new, new_count=new_count, retired=retired, erased_under=erased_under, cached=cached
    )


def _rewrite_without(spark: SparkSession, folder: str, keep, replacement: str) -> bool:
    """Writes ``folder`` minus the rows ``keep`` rejects to ``replacement``; False if none matched.

    The folder's markers go along, so a purged version keeps its ``t`` and its key record.
    """
    rows = spark.read.parquet(folder)
    remaining = keep(rows)
    if remaining.count() == rows.count():
        return False
    writer = remaining.write.mode("overwrite")
    columns = partition_columns(spark, folder)
    if columns:  # a partitioned version stays partitioned: the catalog table reads its folders
        writer = writer.partitionBy(*columns)
    writer.parquet(replacement)
    if columns and not partition_columns(spark, replacement):
        # Every row was an erased subject's: a partitioned write of none leaves no file,
        # and the catalog and readers need the columns (as an empty run's output has them).
        remaining.limit(0).write.mode("overwrite").parquet(replacement)
    for marker, copy in zip(output_markers(folder), output_markers(replacement), strict=True):
        text = read_text(marker)
        if text is not None:
            write_text(copy, text)
    return True


def _readable(spark: SparkSession, folder: str) -> bool:
    """Whether every file's footer in ``folder`` reads: a damaged output that is not
    current must not keep an erasure from the others (the run would stop on it, every
    day); it cannot be searched for the subject, so it goes. Only damage counts: any
    other failure stops the run and removes nothing."""
    try:
        spark.read.parquet(folder).count()
    except Exception as err:
        if unreadable_file(err) is None:
            raise  # not damage (a store unreachable, say): the run stops, the folder stays
        return False
    return True


def _purge_in_place(spark: SparkSession, folder: str, keep, replacement: str, before_swap=None) -> bool:
    """Replaces ``folder`` by its purged copy when ``keep`` rejected rows; for folders no
    reader holds on to (older versions, staging, quarantine). ``before_swap`` runs once
    the copy is made, before ``folder`` changes."""
    if not exists(spark, folder) or not _rewrite_without(spark, folder, keep, replacement):
        return False
    if before_swap is not None:
        before_swap()
    remove(spark, folder)
    move(spark, replacement, folder)
    return True


def purge_published(
    spark: SparkSession,
    lake: Lake,
    policy: Policy,
    state: ErasureState,
    pseudonymizer: Pseudonymizer,
    ring: dict[str, SecretKey] | None = None,
) -> None:
    """Removes newly erased subjects from retained versions, failed outputs and quarantine.

    A version made with a retired key (the current one, during a rotation run) is purged
    of every erased subject hashed with that key; a non-current version made with a key
    the run does not have is removed, since nothing could purge it later.
    """
    current_key = pseudonymizer.key.fingerprint
    ring = ring or {current_key: pseudonymizer.key}
    new_hashes = state.new.select(SUBJECT_HASH).distinct().cache()
    state.cached.append(new_hashes)
    has_new = state.new_count > 0

    def keep_published(hashes: DataFrame, key_pseudonymizer: Pseudonymizer, record: SubjectRecord):
        """The filter for a folder whose rows carry their subject as ``record`` says."""
        if policy.is_share:
            # An export holds the recipient's pseudonyms of ours.
            hashes = as_recipient_pseudonyms(spark, hashes, SUBJECT_HASH, key_pseudonymizer.key, policy)

        def keep(rows: DataFrame) -> DataFrame:
            erased = F.broadcast(hashes.withColumnRenamed(SUBJECT_HASH, "_cg_erased"))
            if record.rule == "pseudonymize":
                return rows.join(erased, F.col(record.column) == F.col("_cg_erased"), "left_anti")
            # The key is published as it is: its pseudonym, under the run's normalisation.
            subjects = key_pseudonymizer.attach(rows).withColumn(
                SUBJECT, normalize_subject(F.col(record.column), policy.subject_key_normalize)
            )
            kept = with_subject_hash(subjects, key_pseudonymizer).join(
                erased, F.col(SUBJECT_HASH) == F.col("_cg_erased"), "left_anti"
            )
            return key_pseudonymizer.detach(kept).drop(SUBJECT, SUBJECT_HASH)

        return keep

    def searchable(folder: str, record: SubjectRecord):
        """_UNCHANGED when no row of ``folder`` links to a subject, _UNSEARCHABLE when
        its rows do but an erased subject's could not be told apart, else True."""
        rows = spark.read.parquet(folder)
        # A folder from before the record, made when the key was dropped or named
        # otherwise, is searched as today's policy publishes: it may not have the column.
        if record.column in rows.columns and record.searchable_by(policy):
            return True
        # Anonymised rows carry nothing that links them to a subject.
        consented = rows.filter(F.col(STATE_COLUMN) == "consented") if STATE_COLUMN in rows.columns else rows
        return _UNSEARCHABLE if consented.limit(1).count() else _UNCHANGED

    def keep_raw(rows: DataFrame) -> DataFrame:
        subjects = rows.withColumn(SUBJECT, policy_subject(policy))
        hashed = with_subject_hash(pseudonymizer.attach(subjects), pseudonymizer)
        return pseudonymizer.detach(hashed.join(new_hashes, on=SUBJECT_HASH, how="left_anti")).drop(
            SUBJECT, SUBJECT_HASH
        )

    from transforms.publish import current_version, repoint_current

    retired_hashes: dict[str, tuple] = {}  # one per retired key, however many folders it made

    def keep_for(folder: str, version: str, is_current: bool = False):
        """The filter that purges ``folder`` with the key it was made with; None when the
        run does not have that key (or nobody recorded it); _UNSEARCHABLE when its rows
        cannot be searched for a subject (a damaged folder that is not current too)."""
        made_with = fingerprint_of(recorded_keys(lake, policy.dataset, folder, version), "hmac")
        if made_with == current_key and not has_new:
            return _UNCHANGED
        if made_with != current_key and made_with not in ring:
            return None
        if not is_current and not _readable(spark, folder):
            return _UNSEARCHABLE
        record = read_subject_record(folder, policy)
        verdict = searchable(folder, record)
        if verdict is not True:
            return verdict
        if made_with == current_key:
            return keep_published(new_hashes, pseudonymizer, record)
        if made_with not in retired_hashes:
            retired = Pseudonymizer(spark, ring[made_with], tag="folder_key")
            hashes = state.erased_under(retired).select(SUBJECT_HASH).cache()
            state.cached.append(hashes)
            retired_hashes[made_with] = (hashes, retired)
        return keep_published(*retired_hashes[made_with], record)

    current = current_version(lake, policy.dataset)
    versions = list_dirs(spark, lake.clean(policy.dataset))
    current_keep = None
    if current is not None and current in versions:
        # Before anything is removed: a current version this run cannot purge stops it.
        folder = lake.clean_version(policy.dataset, current)
        current_keep = keep_for(folder, current, is_current=True)
        if current_keep is None:
            raise MissingKeyError(f"{folder}: made with a key this run does not have; it cannot be purged")
        if current_keep is _UNSEARCHABLE:
            _refuse_unsearchable_current(folder, read_subject_record(folder, policy), policy)
        # What a purge of the current version left when it stopped before the swap: never
        # current, and made again below under the same name (its disclosure line, for a
        # share, is then the one already logged rather than a second under a new name).
        leftovers = [v for v in versions if is_purged_copy_of(v, current)]
        if leftovers or has_new:
            # A job may have stopped between the catalog's swap and CURRENT's (this purge's,
            # or a publish's): the table goes back to CURRENT's version before a folder it
            # may read is removed or rewritten.
            repoint_current(spark, lake, policy.dataset, current)
        for leftover in leftovers:
            remove(spark, lake.clean_version(policy.dataset, leftover))
        versions = [v for v in versions if v not in leftovers]
    for version in versions:
        folder = lake.clean_version(policy.dataset, version)
        keep = current_keep if version == current else keep_for(folder, version)  # the current one's: above
        if keep is _UNCHANGED:
            continue
        if keep is None:
            remove(spark, folder)  # not current (checked above): nothing could ever purge it
            state.retired_versions.append(version)
            continue
        if keep is _UNSEARCHABLE:
            if version == current:
                continue  # its subject key was dropped (checked above): this run's publication replaces it
            remove(spark, folder)  # nothing could ever purge it, and a rollback would publish it again
            state.unsearchable_versions.append(version)
            continue
        # A name no folder has: a purge repeated after a crash never overwrites a live one.
        purged = next(
            purged_copy_name(version, n)
            for n in range(len(versions) + 1)
            if purged_copy_name(version, n) not in versions
        )
        replacement = lake.clean_version(policy.dataset, purged)
        if version != current:
            if _purge_in_place(spark, folder, keep, replacement):
                state.purged_versions.append(version)
        elif _rewrite_without(spark, folder, keep, replacement):
            if policy.is_share:
                # The purged copy is what the recipient is handed from now on: logged,
                # like every export, before it is made current.
                entry = purged_export_entry(spark, lake, policy, version, purged, replacement)
                append_stamped_line_once(lake.disclosure_log, entry)
            # Readers move to the purged copy atomically, then the old one goes.
            repoint_current(spark, lake, policy.dataset, purged)
            # The ledger goes along: its verdicts still name the erased subjects, whose
            # periods the next incremental run therefore judges again.
            if exists(spark, lake.ledger(policy.dataset, version)):
                move(spark, lake.ledger(policy.dataset, version), lake.ledger(policy.dataset, purged))
            remove(spark, folder)
            state.purged_versions.append(purged)

    # Unpublished outputs: a staged output or failed output made with a key the run does
    # not have is removed (it is not published, and nothing could purge it later).
    unpublished = [
        (lake.staging_data(policy.dataset, run), run, state.purged_staging, run)
        for run in list_dirs(spark, lake.path("staging", policy.dataset))
    ] + [
        (lake.failed_output(policy.dataset, run), run, state.purged_quarantine, f"{run}/failed_output")
        for run in list_dirs(spark, lake.quarantine(policy.dataset))
    ]
    for folder, run, purged_list, label in unpublished:
        if not exists(spark, folder):
            continue
        keep = keep_for(folder, run)
        if keep is _UNCHANGED:
            continue
        staged = purged_list is state.purged_staging

        def forget_validation(run=run, staged=staged) -> None:
            if staged:
                _forget_validation(lake, policy.dataset, run)

        if keep is None or keep is _UNSEARCHABLE:
            forget_validation()
            remove(spark, folder)
        elif not _purge_in_place(spark, folder, keep, f"{folder}.erased", forget_validation):
            continue
        purged_list.append(label)
        if not staged:  # a failed output, rewritten with Spark's default modes
            restrict_to_owner(lake.quarantine_run(policy.dataset, run))

    if has_new:
        for run in list_dirs(spark, lake.quarantine(policy.dataset)):
            folder = lake.quarantine_rows(policy.dataset, run)

            def forget_if_staged(run=run) -> None:
                # The run's validation compares its output's counts with this quarantine.
                if exists(spark, lake.staging_data(policy.dataset, run)):
                    _forget_validation(lake, policy.dataset, run)

            if _purge_in_place(spark, folder, keep_raw, f"{folder}.erased", forget_if_staged):
                state.purged_quarantine.append(f"{run}/rows")
                restrict_to_owner(lake.quarantine_run(policy.dataset, run))


def _forget_validation(lake: Lake, dataset: str, run: str) -> None:
    """What was validated is not what is staged now (or its quarantine changed): that run
    must not publish it (its publish finds no passed validation, and its report says so),
    and validating it again is refused (run enforce again). Forgotten before the folder
    changes, so that a job killed during the swap leaves no passed validation of an output
    it no longer describes."""
    write_json(lake.step_state(dataset, run, PURGED_FOR_ERASURE), {"purged": True})
    delete(lake.step_state(dataset, run, "validate"))
    if split_export(dataset) is not None:
        from transforms.share import log_not_exported

        log_not_exported(lake, dataset, run, "its staged output was purged for an erasure; enforce it again")


def _refuse_unsearchable_current(folder: str, record: SubjectRecord, policy: Policy) -> None:
    """The current version stays readable until this run publishes: when its subject key
    was normalised otherwise, the run stops rather than leave an erased subject there."""
    if record.rule == "drop" or record.normalization == policy.normalization:
        return  # its key was dropped, or is missing: nothing to search by
    raise PolicyError(
        f"{policy.path}: subject_key_normalize: [{policy.normalization}] cannot find erased subjects in the current "
        f"version {folder}, published under [{record.normalization}]; run under [{record.normalization}] (a "
        "normalisation can change only by a run that publishes before the next erasure)"
    )


def record_tombstones(lake: Lake, policy: Policy, state: ErasureState, fingerprint: str) -> None:
    new = state.new.select(
        SUBJECT_HASH,
        "erased_at",
        F.lit(fingerprint).alias(KEY_FINGERPRINT),
        F.lit(policy.normalization).alias(NORMALIZATION),
    )
    # Each hash is the customer's published pseudonym: with `erased_at` beside it, whoever
    # holds an earlier extract could tell who asked for erasure, and when. Owner-only
    # before any is written (and for those a lake holds from before).
    private_folder(lake.tombstones)
    if state.new_count:
        # One file per run rather than one per shuffle partition: a year of daily runs
        # would leave thousands of tiny files for every later run to list and read.
        new.coalesce(1).write.mode("append").parquet(lake.tombstones_of(policy.dataset))
        restrict_to_owner(lake.tombstones)
