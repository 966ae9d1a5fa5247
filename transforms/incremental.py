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
lake). Anything that makes a period's output depend on other periods, or on a subject's
history rather than its verdict, makes the run a full one: k-anonymity (group sizes
span periods), ``check_consent_at: event_and_run``, another policy or key, no ledger.

The ledger of the current version lives at ``ledger/<dataset>/<version>/`` (restricted):
``subjects/`` (the subject's keyed pseudonym, verdict and periods; an erased subject
keeps no periods) and ``ledger.json`` (``t0``, the policy, the key, and the input rows
per period).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from transforms.consent import GRANTED, SUBJECT, WITHDRAWN, instant
from transforms.fs import exists, link_folder, list_dirs, remove
from transforms.keys import RunKeys
from transforms.lake import Lake
from transforms.partitions import folder_name, partition_columns, periods_between
from transforms.policy import CheckConsentAt, Policy
from transforms.pseudonym import Pseudonymizer
from transforms.storage import read_json, restrict_to_owner, write_json

LEDGER_FORMAT = 1
PERIOD = "_cg_period"
PERIODS = "_cg_periods"
VERDICT = "_cg_verdict"
LEDGER_SUBJECT = "subject_pseudonym"
# The input rows with no event time (quarantined) are counted under this period name.
NO_PERIOD = "none"


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


def verdict(t: datetime, is_erased: Column) -> Column:
    """What decides a subject's rows at ``t``, the subject-wide part of ``reason_code``."""
    status, expires = F.col("consent_status"), F.col("consent_expires_at")
    return (
        F.when(is_erased, F.lit("erased"))
        .when(status.isNull(), F.lit("no_consent"))
        .when(status == WITHDRAWN, F.lit("withdrawn"))
        .when(status != GRANTED, F.lit("no_consent"))
        .when(expires.isNotNull() & (expires <= instant(t)), F.lit("consent_expired"))
        .otherwise(F.lit("consented"))
    )


def ledger_subjects(states: DataFrame, t: datetime, pseudonymizer: Pseudonymizer, erased_flag: str) -> DataFrame:
    """One row per subject: its keyed pseudonym, verdict at ``t`` and periods (none once erased)."""
    is_erased = F.col(erased_flag)
    return pseudonymizer.attach(states).select(
        pseudonymizer.hmac_hex(F.col(SUBJECT)).alias(LEDGER_SUBJECT),
        verdict(t, is_erased).alias(VERDICT),
        F.when(is_erased, F.array().cast("array<date>")).otherwise(F.col(PERIODS)).alias(PERIODS),
    )


def period_key(period: date | None) -> str:
    return NO_PERIOD if period is None else period.isoformat()


def input_rows_by_period(rows: DataFrame) -> dict[str, int]:
    """``{period: input rows}`` of rows that carry ``_cg_period``."""
    counted = rows.groupBy(PERIOD).agg(F.count("*").alias("n")).collect()
    return {period_key(row[PERIOD]): int(row["n"]) for row in counted}


def ledger_subjects_path(folder: str) -> str:
    return f"{folder}/subjects"


def write_ledger(folder: str, policy: Policy, t: datetime, keys: RunKeys, rows_by_period: dict[str, int]) -> None:
    """The ledger's summary, written once the run's counts reconcile (its subjects are
    written first: the plan reads them)."""
    write_json(
        f"{folder}/ledger.json",
        {
            "format": LEDGER_FORMAT,
            "judged_at": t.isoformat(),
            "policy_sha256": policy.sha256,
            "key_fingerprint": keys.hmac.fingerprint,
            "partition_column": policy.partition_column,
            "input_rows_by_period": rows_by_period,
        },
    )


def plan_run(
    spark: SparkSession,
    lake: Lake,
    policy: Policy,
    t: datetime,
    keys: RunKeys,
    full_requested: bool,
    subjects: DataFrame,
    rows_by_period: dict[str, int],
) -> Plan:
    """Full or incremental, and which periods to judge again."""
    from transforms.publish import current_version

    if policy.partition_by is None:
        return Plan(full=True, reason="the policy has no partition_by")
    if full_requested:
        return Plan(full=True, reason="requested (--full)")
    if policy.quasi_identifiers:
        return Plan(full=True, reason="k-anonymity counts groups across every period")
    if policy.check_consent_at is CheckConsentAt.EVENT_AND_RUN:
        return Plan(full=True, reason="consent at each event's time depends on the subject's whole history")
    previous = current_version(lake, policy.dataset)
    if previous is None:
        return Plan(full=True, reason="no published version yet")
    ledger_folder = lake.ledger(policy.dataset, previous)
    ledger = read_json(f"{ledger_folder}/ledger.json")
    if ledger is None:
        return Plan(full=True, reason=f"the current version {previous} has no ledger")
    for field, now, why in (
        ("format", LEDGER_FORMAT, "the ledger's format changed"),
        ("policy_sha256", policy.sha256, "the policy changed"),
        ("key_fingerprint", keys.hmac.fingerprint, "the pseudonymisation key changed"),
        ("partition_column", policy.partition_column, "the partitioning changed"),
    ):
        if ledger.get(field) != now:
            return Plan(full=True, reason=f"{why} since the current version {previous}")
    published = lake.clean_version(policy.dataset, previous)
    if partition_columns(spark, published) not in ([], [policy.partition_column]):
        return Plan(full=True, reason=f"the current version {previous} is not partitioned by {policy.partition_column}")
    t0 = datetime.fromisoformat(ledger["judged_at"])
    if t0 > t:
        return Plan(full=True, reason=f"judged before the current version {previous} ({ledger['judged_at']})")

    affected = _changed_subjects_periods(spark, ledger_subjects_path(ledger_folder), subjects)
    previous_rows = ledger["input_rows_by_period"]
    for key in set(previous_rows) | set(rows_by_period):
        if key != NO_PERIOD and previous_rows.get(key) != rows_by_period.get(key):
            affected.add(date.fromisoformat(key))
    affected |= periods_between(policy, t0, t)
    if policy.retention_days is not None:
        retention = timedelta(days=policy.retention_days)
        affected |= periods_between(policy, t0 - retention, t - retention)
    present = {date.fromisoformat(key) for key in rows_by_period if key != NO_PERIOD}
    return Plan(
        full=False,
        reason=f"incremental over the current version {previous}",
        previous_version=previous,
        previous_t=ledger["judged_at"],
        affected=frozenset(affected & present),
        reused=frozenset(present - affected),
    )


def _changed_subjects_periods(spark: SparkSession, ledger_subjects_path: str, subjects: DataFrame) -> set[date]:
    """Periods, then or now, of the subjects whose verdict differs from the ledger's (or
    who appear on one side only)."""
    before = spark.read.parquet(ledger_subjects_path).select(
        LEDGER_SUBJECT, F.col(VERDICT).alias("before"), F.col(PERIODS).alias("periods_before")
    )
    now = subjects.select(LEDGER_SUBJECT, F.col(VERDICT).alias("now"), F.col(PERIODS).alias("periods_now"))
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
    from transforms.fs import move

    staged = lake.staged_ledger(dataset, run_id)
    for old in list_dirs(spark, lake.path("ledger", dataset)):
        if old != version:
            remove(spark, lake.ledger(dataset, old))
    if exists(spark, staged):
        move(spark, staged, lake.ledger(dataset, version))
        restrict_to_owner(lake.path("ledger", dataset))
