"""Incremental runs of a partitioned dataset: re-judge only the periods whose output can
have changed since the current version, and take the others from it unchanged.

A row's output depends on the row, its subject's verdict at ``t`` (erased, or the
deciding consent event and whether it is still in force), whether it is past retention
at ``t``, and the policy and keys. Against the current version, judged at ``t0``, a
period's output can change only if
- a subject with rows in it has another verdict (the ledger below holds each
  subject's verdict at ``t0`` and the periods of its rows),
- its number of input rows changed (new rows, late ones, deleted ones),
- it holds instants of ``[t0, t)`` (new rows) or of ``[t0 - retention, t - retention)``
  (rows that passed their retention since).
Every other period's published folder is taken over as it is (hard links on a local
lake), and its rows are counted, not judged again (``judgement_counts``). Anything
that makes a period's output depend on other periods, or on a subject's history rather
than its verdict, makes the run a full one: k-anonymity (group sizes span periods),
``check_consent_at: event_and_run``, another policy or key, no ledger.

The ledger of the current version lives at ``ledger/<dataset>/<version>/`` (restricted):
``subjects/`` (each subject under a key of its own, derived from the HMAC key, so that
it matches no published pseudonym; its verdict and periods; an erased subject keeps no
periods) and ``ledger.json`` (``t0``, the policy, keys, code version and source schema,
and each period's input rows and checksum).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from transforms import __version__
from transforms.consent import SUBJECT
from transforms.fs import exists, link_folder, list_dirs, move, remove
from transforms.judgement_counts import SUBJECT_PERIOD_ROWS, periods_of
from transforms.keys import RunKeys
from transforms.lake import Lake
from transforms.partitions import folder_name, partition_columns, periods_between
from transforms.policy import CheckConsentAt, Policy
from transforms.pseudonym import Pseudonymizer
from transforms.reasons import VERDICT
from transforms.storage import read_json, restrict_to_owner, write_json

LEDGER_FORMAT = 1
PERIOD = "_cg_period"
SUBJECT_PERIODS = "_cg_subject_periods"
LEDGER_SUBJECT = "subject_ledger_hash"
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

    def describe(self) -> dict:
        return {
            "mode": "full" if self.full else "incremental",
            "reason": self.reason,
            "previous_version": self.previous_version,
            "previous_judged_at": self.previous_t,
            "periods_rejudged": len(self.affected),
            "periods_reused": len(self.reused),
        }


def never_incremental(policy: Policy) -> str | None:
    """Why every run of this policy is a full one (it then keeps no ledger), or None."""
    if policy.partition_by is None:
        return "the policy has no partition_by"
    if policy.quasi_identifiers:
        return "k-anonymity counts groups across every period"
    if policy.check_consent_at is CheckConsentAt.EVENT_AND_RUN:
        return "consent at each event's time depends on the subject's whole history"
    return None


def ledger_subjects(spark: SparkSession, states: DataFrame, keys: RunKeys, erased_flag: str) -> DataFrame:
    """One row per subject: its ledger hash, verdict at ``t`` and periods (none once erased)."""
    # A key of the ledger's own: its hashes match no published pseudonym, so the ledger
    # cannot tell anyone a published customer's consent status or months.
    hasher = Pseudonymizer(spark, keys.hmac.derive("incremental ledger"), tag="ledger")
    is_erased = F.col(erased_flag)
    periods = periods_of(F.col(SUBJECT_PERIOD_ROWS))
    return hasher.attach(states).select(
        hasher.hmac_hex(F.col(SUBJECT)).alias(LEDGER_SUBJECT),
        F.col(VERDICT),
        F.when(is_erased, F.array().cast("array<date>")).otherwise(periods).alias(SUBJECT_PERIODS),
    )


def period_key(period: date | None) -> str:
    return NO_PERIOD if period is None else str(period)


def input_by_period(rows: DataFrame) -> dict[str, dict]:
    """``{period: {rows, checksum}}`` of the input rows (which carry ``_cg_period``): a
    late, removed or corrected row changes its period's count or checksum."""
    # An exact sum (decimal, no overflow) of every row's hash over all its columns.
    row_hash = F.xxhash64(*[F.col(c) for c in rows.columns if c != PERIOD]).cast("decimal(38,0)")
    counted = rows.groupBy(PERIOD).agg(F.count("*").alias("n"), F.sum(row_hash).alias("checksum")).collect()
    return {period_key(row[PERIOD]): {"rows": int(row["n"]), "checksum": str(row["checksum"])} for row in counted}


def ledger_subjects_path(folder: str) -> str:
    return f"{folder}/subjects"


def _ledger_identity(policy: Policy, keys: RunKeys, source_schema: str) -> dict:
    """What must not have changed for a version's output to be reused."""
    return {
        "format": LEDGER_FORMAT,
        "consentgate_version": __version__,
        "policy_sha256": policy.sha256,
        "keys": keys.describe(),
        "partition_column": policy.partition_column,
        "source_schema": source_schema,
    }


def write_ledger(
    folder: str, policy: Policy, t: datetime, keys: RunKeys, source_schema: str, inputs: dict[str, dict]
) -> None:
    """The ledger's summary, written once the run's counts reconcile (its subjects are
    written first: the plan reads them)."""
    write_json(
        f"{folder}/ledger.json",
        {**_ledger_identity(policy, keys, source_schema), "judged_at": t.isoformat(), "input_by_period": inputs},
    )
    restrict_to_owner(folder)


def plan_run(
    spark: SparkSession,
    lake: Lake,
    policy: Policy,
    t: datetime,
    keys: RunKeys,
    source_schema: str,
    subjects: DataFrame,
    inputs: dict[str, dict],
) -> Plan:
    """Incremental over the current version, or full and why; for a policy that
    ``never_incremental`` lets run incrementally."""
    from transforms.publish import current_version

    previous = current_version(lake, policy.dataset)
    if previous is None:
        return Plan(full=True, reason="no published version yet")
    ledger_folder = lake.ledger(policy.dataset, previous)
    ledger = read_json(f"{ledger_folder}/ledger.json")
    if ledger is None:
        return Plan(full=True, reason=f"the current version {previous} has no ledger")
    for field, now in _ledger_identity(policy, keys, source_schema).items():
        if ledger.get(field) != now:
            return Plan(full=True, reason=f"{field} changed since the current version {previous}")
    published = lake.clean_version(policy.dataset, previous)
    if partition_columns(spark, published) not in ([], [policy.partition_column]):
        return Plan(full=True, reason=f"the current version {previous} is not partitioned by {policy.partition_column}")
    t0 = datetime.fromisoformat(ledger["judged_at"])
    if t0 > t:
        return Plan(full=True, reason=f"judged before the current version {previous} ({ledger['judged_at']})")

    affected = _changed_subjects_periods(spark, ledger_subjects_path(ledger_folder), subjects)
    before = ledger["input_by_period"]
    for key in set(before) | set(inputs):
        if key != NO_PERIOD and before.get(key) != inputs.get(key):
            affected.add(date.fromisoformat(key))
    affected |= periods_between(policy, t0, t)
    if policy.retention_days is not None:
        retention = timedelta(days=policy.retention_days)
        affected |= periods_between(policy, t0 - retention, t - retention)
    present = {date.fromisoformat(key) for key in inputs if key != NO_PERIOD}
    reused = present - affected
    reused_rows = sum(inputs[period_key(p)]["rows"] for p in reused)
    total_rows = sum(entry["rows"] for entry in inputs.values())
    if reused_rows < MIN_REUSED_SHARE * total_rows:
        return Plan(
            full=True,
            reason=f"{len(present & affected)} of {len(present)} periods changed since the current version {previous}",
        )
    return Plan(
        full=False,
        reason=f"incremental over the current version {previous}",
        previous_version=previous,
        previous_t=ledger["judged_at"],
        affected=frozenset(affected & present),
        reused=frozenset(reused),
    )


def _changed_subjects_periods(spark: SparkSession, previous_subjects: str, subjects: DataFrame) -> set[date]:
    """Periods, then or now, of the subjects whose verdict differs from the ledger's (or
    who appear on one side only)."""
    before = spark.read.parquet(previous_subjects).select(
        LEDGER_SUBJECT, F.col(VERDICT).alias("before"), F.col(SUBJECT_PERIODS).alias("periods_before")
    )
    now = subjects.select(LEDGER_SUBJECT, F.col(VERDICT).alias("now"), F.col(SUBJECT_PERIODS).alias("periods_now"))
    empty = F.array().cast("array<date>")
    changed = (
        before.join(now, on=LEDGER_SUBJECT, how="full_outer")
        .filter(~F.col("before").eqNullSafe(F.col("now")))
        .select(
            F.explode(F.array_union(F.coalesce("periods_before", empty), F.coalesce("periods_now", empty))).alias(
                PERIOD
            )
        )
        .distinct()
    )
    return {row[PERIOD] for row in changed.collect()}


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
