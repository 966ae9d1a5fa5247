"""Incremental runs of a partitioned dataset: judge again only the periods whose output
can have changed since the current version, reading only the source files that hold
them, and take the others from it unchanged.

A row's output depends on the row, its subject's verdict at ``t`` (erased, or the
deciding consent event and whether it is still in force), whether it is past retention
at ``t``, and the policy and keys. Against the current version, judged at ``t0``, a
period's output can change only if
- a subject with rows in it has another verdict (the ledger below holds each
  subject's verdict at ``t0`` and the periods of its rows; the verdicts at ``t`` come
  from the consent log and the erased subjects, not from the source),
- a source file holding its rows was added, changed or removed (the ledger holds each
  file's size, modification time, local identity and rows per period),
- it holds instants of ``[t0, t)`` (new rows) or of ``[t0 - retention, t - retention)``
  (rows that passed their retention since).
Only the files holding rows of those periods are read, and only those periods are
judged. Every other period's published folder is taken over as it is (hard links on a
local lake), with its counts from the ledger. Rows with no event time are judged by
every run, and the quarantine (rows with no subject or no event time) is written whole
each time, from the files the ledger says hold such rows. Anything that makes a period's output depend
on other periods, or on a subject's history rather than its verdict, makes the run a
full one: k-anonymity (group sizes span periods), ``check_consent_at: event_and_run``,
another policy or key, no ledger.

The ledger of the current version lives at ``ledger/<dataset>/<version>/`` (restricted):
``subjects/`` (each subject under a hash of its pseudonym made with a key of its own,
derived from the HMAC key, so that it matches no published pseudonym; its verdict and
periods; an erased subject keeps no periods) and ``ledger.json`` (``t0``, the policy,
keys, code version and source schema, the source's files, each period's judgement
counts, and how many tombstones were made with other keys).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from transforms import __version__
from transforms.consent import SUBJECT, consent_at, consent_events
from transforms.erasure import SUBJECT_HASH, with_subject_hash
from transforms.fs import exists, link_folder, list_dirs, move, remove
from transforms.judgement_counts import SUBJECT_PERIOD_ROWS, input_rows, periods_of
from transforms.keys import RunKeys
from transforms.lake import Lake
from transforms.partitions import folder_name, partition_columns, periods_between
from transforms.policy import CheckConsentAt, Policy
from transforms.pseudonym import Pseudonymizer
from transforms.reasons import VERDICT, Reason, verdict
from transforms.source_files import fingerprint_of, list_source_files, with_fingerprint
from transforms.storage import read_json, restrict_to_owner, write_json

# 3: each source file also has its local identity (inode and change time).
# 4: its subject hashes use the ledger key as derived since 0xFF starts the labels.
LEDGER_FORMAT = 4
PERIOD = "_cg_period"
SUBJECT_PERIODS = "_cg_subject_periods"
LEDGER_SUBJECT = "subject_ledger_hash"
_BEFORE = "_cg_verdict_before"
# The input rows with no event time (quarantined) are counted under this period name.
NO_PERIOD = "none"
# Below this share of the input in reusable periods, linking and checking the reused
# folders saves less than they cost: the run is a full one.
MIN_REUSED_SHARE = 0.2


@dataclass(frozen=True)
class Plan:
    """How a run is done: ``full``, or incremental over ``affected`` periods taking the
    others from ``previous_version``."""

    full: bool
    reason: str
    previous_version: str | None = None
    previous_t: str | None = None
    affected: frozenset[date] = frozenset()
    reused: frozenset[date] = frozenset()
    files_read: int | None = None
    files: int | None = None

    def describe(self) -> dict:
        return {
            "mode": "full" if self.full else "incremental",
            "reason": self.reason,
            "previous_version": self.previous_version,
            "previous_judged_at": self.previous_t,
            "periods_rejudged": len(self.affected),
            "periods_reused": len(self.reused),
            "source_files_read": self.files_read,
            "source_files": self.files,
        }


@dataclass
class Previous:
    """What an incremental run takes from the current version's ledger."""

    ledger: dict
    # Its subjects, with their verdict now (VERDICT) and at t0 (_BEFORE); cached.
    subjects: DataFrame
    # The source's files now: size, modification time, rows per period, unjudgeable rows.
    files: dict[str, dict]
    # The files holding rows of the affected periods, or rows with no event time.
    to_read: list[str] = field(default_factory=list)
    # Every period whose output can have changed (also those no file holds any more).
    affected: set[date] = field(default_factory=set)


def never_incremental(policy: Policy) -> str | None:
    """Why every run of this policy is a full one (it then keeps no ledger), or None."""
    if policy.partition_by is None:
        return "the policy has no partition_by"
    if policy.quasi_identifiers:
        return "k-anonymity counts groups across every period"
    if policy.check_consent_at is CheckConsentAt.EVENT_AND_RUN:
        return "consent at each event's time depends on the subject's whole history"
    return None


def ledger_hasher(spark: SparkSession, keys: RunKeys) -> Pseudonymizer:
    # A key of the ledger's own: its hashes match no published pseudonym, so the ledger
    # cannot tell anyone a published customer's consent status or months.
    return Pseudonymizer(spark, keys.hmac.derive("incremental ledger"), tag="ledger")


def with_ledger_subject(rows: DataFrame, pseudonym: str, hasher: Pseudonymizer) -> DataFrame:
    """Adds the ledger's hash of each row's subject, from its pseudonym (``pseudonym``):
    so erased subjects, known only by their pseudonyms, are found in the ledger too."""
    return hasher.detach(hasher.attach(rows).withColumn(LEDGER_SUBJECT, hasher.hmac_hex(F.col(pseudonym))))


def with_pseudonym(rows: DataFrame, pseudonymizer: Pseudonymizer) -> DataFrame:
    """Adds the pseudonym (``_cg_subject_hash``) of each row's normalised subject."""
    return pseudonymizer.detach(with_subject_hash(pseudonymizer.attach(rows), pseudonymizer))


def ledger_subjects(
    states: DataFrame, pseudonymizer: Pseudonymizer, hasher: Pseudonymizer, erased_flag: str
) -> DataFrame:
    """One row per subject: its ledger hash, verdict at ``t`` and periods (none once erased)."""
    is_erased = F.col(erased_flag)
    periods = periods_of(F.col(SUBJECT_PERIOD_ROWS))
    hashed = with_ledger_subject(with_pseudonym(states, pseudonymizer), SUBJECT_HASH, hasher)
    return hashed.select(
        LEDGER_SUBJECT,
        F.col(VERDICT),
        F.when(is_erased, F.array().cast("array<date>")).otherwise(periods).alias(SUBJECT_PERIODS),
    )


def verdicts_now(
    previous_subjects: DataFrame,
    consent: DataFrame,
    erased: DataFrame,
    policy: Policy,
    t: datetime,
    pseudonymizer: Pseudonymizer,
    hasher: Pseudonymizer,
) -> DataFrame:
    """The ledger's subjects with their verdict at ``t`` (``VERDICT``) beside the one the
    ledger recorded (``_BEFORE``), decided as ``enforce.subject_states`` decides them but
    from the consent log and the erased subjects' pseudonyms alone."""
    events = consent_events(consent, policy.purpose, policy.subject_key_normalize, policy.sale_or_sharing)
    decided = with_ledger_subject(with_pseudonym(consent_at(events, t), pseudonymizer), SUBJECT_HASH, hasher)
    erased_now = with_ledger_subject(erased.select(SUBJECT_HASH).distinct(), SUBJECT_HASH, hasher)
    flagged = erased_now.select(LEDGER_SUBJECT, F.lit(True).alias("_cg_erased_now"))
    subjects = previous_subjects.select(LEDGER_SUBJECT, F.col(VERDICT).alias(_BEFORE), SUBJECT_PERIODS)
    joined = subjects.join(decided.drop(SUBJECT, SUBJECT_HASH), LEDGER_SUBJECT, "left").join(
        flagged, LEDGER_SUBJECT, "left"
    )
    # Tombstones are never removed: a subject erased at t0 is erased at t.
    is_erased = (F.col(_BEFORE) == Reason.ERASED.value) | F.coalesce(F.col("_cg_erased_now"), F.lit(False))
    return joined.select(LEDGER_SUBJECT, _BEFORE, verdict(t, is_erased).alias(VERDICT), SUBJECT_PERIODS)


def merged_subjects(previous: DataFrame, judged: DataFrame, affected: list[date]) -> DataFrame:
    """The next ledger's subjects: the previous ones with their verdict at ``t`` and their
    periods outside ``affected``, and those of the rows judged (``judged``: their
    ``ledger_subjects``), whose periods are all in ``affected``."""
    empty = F.array().cast("array<date>")
    outside = F.filter(F.col(SUBJECT_PERIODS), lambda period: ~period.isin(affected))
    kept = previous.select(LEDGER_SUBJECT, F.col(VERDICT).alias("_cg_v_old"), outside.alias("_cg_p_old"))
    new = judged.select(LEDGER_SUBJECT, F.col(VERDICT).alias("_cg_v_new"), F.col(SUBJECT_PERIODS).alias("_cg_p_new"))
    both = kept.join(new, LEDGER_SUBJECT, "full_outer")
    verdict_now = F.coalesce("_cg_v_new", "_cg_v_old")
    periods = F.array_sort(F.array_union(F.coalesce("_cg_p_old", empty), F.coalesce("_cg_p_new", empty)))
    is_erased = verdict_now == Reason.ERASED.value
    # A subject stays while it has rows (an erased one for good: its rows are not listed).
    has_rows = F.col("_cg_v_new").isNotNull() | (F.size(F.coalesce("_cg_p_old", empty)) > 0) | is_erased
    return both.filter(has_rows).select(
        LEDGER_SUBJECT, verdict_now.alias(VERDICT), F.when(is_erased, empty).otherwise(periods).alias(SUBJECT_PERIODS)
    )


def period_key(period: date | None) -> str:
    return NO_PERIOD if period is None else str(period)


def ledger_subjects_path(folder: str) -> str:
    return f"{folder}/subjects"


def _ledger_identity(policy: Policy, keys: RunKeys, source_schema: str) -> dict:
    """What must not have changed for a version's output to be reused."""
    return {
        "format": LEDGER_FORMAT,
        "consentgate_version": __version__,
        "policy_sha256": policy.sha256,
        "keys": keys.describe(),
        # Tombstones that recorded no key are matched under every key of the ring: with
        # other retired keys they may erase other subjects, which the ledger cannot see.
        "retired_hmac_keys": sorted(
            fingerprint for fingerprint in keys.hmac_ring() if fingerprint != keys.hmac.fingerprint
        ),
        "partition_column": policy.partition_column,
        "source_schema": source_schema,
    }


def write_ledger(
    folder: str,
    policy: Policy,
    t: datetime,
    keys: RunKeys,
    source_schema: str,
    files: dict[str, dict],
    by_period: dict[str, dict],
    other_key_tombstones: int,
) -> None:
    """The ledger's summary, written once the run's counts reconcile (its subjects are
    written first)."""
    write_json(
        f"{folder}/ledger.json",
        {
            **_ledger_identity(policy, keys, source_schema),
            "judged_at": t.isoformat(),
            "tombstones_made_with_other_keys": other_key_tombstones,
            "source_files": files,
            "counts_by_period": by_period,
        },
    )
    restrict_to_owner(folder)


def _periods(keys) -> set[date]:
    """The periods named by ``keys``; past year 9999 (a faulty event time, always after
    ``t``) a period has no Python date and is never judged."""
    periods = set()
    for key in keys:
        try:
            periods.add(date.fromisoformat(key))
        except ValueError:
            continue  # NO_PERIOD, or beyond year 9999
    return periods


def plan_run(
    spark: SparkSession,
    lake: Lake,
    policy: Policy,
    t: datetime,
    keys: RunKeys,
    source_schema: str,
    source_root: str,
    count_files: Callable[[list[str]], dict[str, dict]],
    subjects_now: Callable[[DataFrame], DataFrame],
    other_key_tombstones: int,
) -> tuple[Plan, Previous | None]:
    """Incremental over the current version, or full and why; for a policy that
    ``never_incremental`` lets run incrementally. ``count_files`` counts some source
    files' rows per period (``source_files.count_source``); ``subjects_now`` gives the
    ledger's subjects their verdicts at ``t`` (``verdicts_now``)."""
    from transforms.publish import current_version

    previous = current_version(lake, policy.dataset)
    if previous is None:
        return Plan(full=True, reason="no published version yet"), None
    ledger_folder = lake.ledger(policy.dataset, previous)
    ledger = read_json(f"{ledger_folder}/ledger.json")
    if ledger is None:
        return Plan(full=True, reason=f"the current version {previous} has no ledger"), None
    for name, now in _ledger_identity(policy, keys, source_schema).items():
        if ledger.get(name) != now:
            return Plan(full=True, reason=f"{name} changed since the current version {previous}"), None
    if ledger.get("tombstones_made_with_other_keys") != other_key_tombstones:
        # Their subjects cannot be found in the ledger by pseudonym under the run's key.
        return Plan(full=True, reason=f"tombstones made with another key since the current version {previous}"), None
    published = lake.clean_version(policy.dataset, previous)
    if partition_columns(spark, published) not in ([], [policy.partition_column]):
        reason = f"the current version {previous} is not partitioned by {policy.partition_column}"
        return Plan(full=True, reason=reason), None
    t0 = datetime.fromisoformat(ledger["judged_at"])
    if t0 > t:
        return Plan(full=True, reason=f"judged before the current version {previous} ({ledger['judged_at']})"), None

    # Source files added, changed or removed: every period they held or hold.
    listed = list_source_files(spark, source_root)
    before = ledger["source_files"]
    changed = sorted(name for name, stat in listed.items() if fingerprint_of(before.get(name, {})) != stat)
    fresh = count_files(changed) if changed else {}
    files = {}
    for name, stat in listed.items():
        counted = fresh.get(name, {"periods": {}, "unjudgeable": 0}) if name in changed else before[name]
        files[name] = with_fingerprint(counted, stat)
    affected = set()
    for name in set(changed) | (set(before) - set(listed)):
        affected |= _periods(before.get(name, {}).get("periods", {})) | _periods(fresh.get(name, {}).get("periods", {}))

    subjects = subjects_now(spark.read.parquet(ledger_subjects_path(ledger_folder))).cache()
    try:
        moved = (
            subjects.filter(~F.col(_BEFORE).eqNullSafe(F.col(VERDICT)))
            .select(F.explode(SUBJECT_PERIODS).alias(PERIOD))
            .distinct()
            .collect()
        )
        affected |= {row[PERIOD] for row in moved}
        affected |= periods_between(policy, t0, t)
        if policy.retention_days is not None:
            retention = timedelta(days=policy.retention_days)
            affected |= periods_between(policy, t0 - retention, t - retention)
        counted_before = ledger["counts_by_period"]
        published_before = _periods(counted_before)
        reused = published_before - affected
        reused_rows = sum(input_rows(counted_before[period_key(p)]) for p in reused)
        total_rows = sum(input_rows(metrics) for metrics in counted_before.values())
        if reused_rows < MIN_REUSED_SHARE * total_rows:
            subjects.unpersist()
            judged = len(published_before & affected)
            reason = f"{judged} of {len(published_before)} periods changed since the current version {previous}"
            return Plan(full=True, reason=reason), None
    except BaseException:
        subjects.unpersist()
        raise
    in_files = set().union(*(_periods(entry["periods"]) for entry in files.values())) if files else set()
    judged = affected & in_files
    wanted = {period_key(p) for p in judged}
    # Rows with no event time are judged by every run (they are counted under no period).
    to_read = sorted(name for name, entry in files.items() if (wanted | {NO_PERIOD}) & set(entry["periods"]))
    plan = Plan(
        full=False,
        reason=f"incremental over the current version {previous}",
        previous_version=previous,
        previous_t=ledger["judged_at"],
        affected=frozenset(judged),
        reused=frozenset(reused),
        files_read=len(to_read),
        files=len(files),
    )
    return plan, Previous(ledger=ledger, subjects=subjects, files=files, to_read=to_read, affected=affected)


def reuse_periods(spark: SparkSession, policy: Policy, previous_folder: str, staged: str, periods) -> None:
    """Puts the previous version's folders of ``periods`` into the staged output."""
    for period in sorted(periods):
        name = folder_name(policy, period)
        if exists(spark, f"{previous_folder}/{name}"):  # none when every row of the period was dropped
            link_folder(spark, f"{previous_folder}/{name}", f"{staged}/{name}")


def publish_ledger(spark: SparkSession, lake: Lake, dataset: str, run_id: str, version: str) -> None:
    """Moves the run's ledger to its version, and removes every other version's: only the
    current version's ledger is needed, and old ones would keep erased subjects' periods."""
    staged = lake.staged_ledger(dataset, run_id)
    for old in list_dirs(spark, lake.path("ledger", dataset)):
        if old != version:
            remove(spark, lake.ledger(dataset, old))
    if exists(spark, staged):
        move(spark, staged, lake.ledger(dataset, version))
        restrict_to_owner(lake.path("ledger", dataset))


def remove_staged_ledgers(spark: SparkSession, lake: Lake, dataset: str) -> None:
    """Removes the staged ledgers of earlier runs, when a run starts (it stages its own):
    those that will not publish would keep erased subjects' periods, and one still
    waiting to publish then publishes without one, so that the next run is full."""
    for run in list_dirs(spark, lake.path("staging", dataset)):
        remove(spark, lake.staged_ledger(dataset, run))  # nothing to do where there is none
