"""The enforce job: judge every input row, apply the policy's column rules, and write
the staged output, the quarantine and the counts for the run.

Input of a run for run date D is every source row with ``event_time < t`` (t = D+1
00:00 UTC) plus the rows with no event time (which are quarantined); the output is a
full recomputation at ``t``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from transforms import schemas
from transforms.consent import SUBJECT, consent_at, consent_events, instant, with_consent_at_event
from transforms.erasure import SUBJECT_HASH, erasure_state, purge_published, record_tombstones, with_subject_hash
from transforms.errors import SchemaError, StepStateError
from transforms.keys import SecretKey
from transforms.lake import Lake, judged_at_marker, judgement_instant
from transforms.policy import STATE_COLUMN, CheckConsentAt, Policy
from transforms.pseudonym import Pseudonymizer
from transforms.reasons import Action, Reason, action_code, action_for, reason_code
from transforms.rules import RuleContext, type_family
from transforms.storage import restrict_to_owner, write_json, write_text
from transforms.subjects import normalize_subject

REASON = "_cg_reason"
ACTION = "_cg_action"
QUARANTINE_REASON = "quarantine_reason"
ERASED_FLAG = "_cg_is_erased"


def read_source(spark: SparkSession, lake: Lake, policy: Policy) -> DataFrame:
    path = lake.path(policy.source)
    source = schemas.read_parquet(spark, path)
    check_source_schema(source.schema, policy, path)
    return source


def check_source_schema(schema: StructType, policy: Policy, path: str) -> None:
    """Declared columns must exist, fit their rules and not be nested; undeclared ones are ignored."""
    fields = {field.name: field.dataType for field in schema.fields}
    for required in (policy.subject_key, policy.event_time):
        if required not in fields:
            raise SchemaError(f"{path}: column {required!r} named by the policy is missing")
    schemas.check_event_time_type(fields[policy.event_time], path, policy.event_time)
    if policy.tcf is not None:
        if policy.tcf.column not in fields:
            raise SchemaError(f"{path}: TC string column {policy.tcf.column!r} named by the policy is missing")
        if type_family(fields[policy.tcf.column]) != "string":
            raise SchemaError(f"{path}: TC string column {policy.tcf.column!r} must be a string")
    for column in policy.columns:
        if column.name not in fields:
            raise SchemaError(f"{path}: declared column {column.name!r} is missing")
        dtype = fields[column.name]
        for state, rule in (("consented", column.consented), ("anonymized", column.anonymized)):
            if not rule.fits(dtype):
                raise SchemaError(
                    f"{path}: column {column.name!r} is {dtype.simpleString()}; "
                    f"rule {rule.text!r} ({state}) does not fit it"
                )


def read_consent(spark: SparkSession, lake: Lake) -> DataFrame:
    """The consent log; absent means no consent for anyone (fail closed)."""
    consent = schemas.read_parquet(spark, lake.consent, required=False)
    if consent is None:
        return spark.createDataFrame([], schemas.CONSENT_SCHEMA)
    schemas.require_columns(consent, lake.consent, schemas.CONSENT_COLUMNS)
    return consent


def run_input(source: DataFrame, policy: Policy, run_date: date) -> DataFrame:
    """The run's input: rows before ``t``, and rows with no event time (to be quarantined)."""
    event_time = F.col(policy.event_time).cast("timestamp")
    return source.filter(event_time.isNull() | (event_time < instant(judgement_instant(run_date))))


def judge(
    source: DataFrame,
    consent: DataFrame,
    erased: DataFrame,
    policy: Policy,
    run_date: date,
    pseudonymizer: Pseudonymizer,
) -> DataFrame:
    """The run's input rows, each with its reason code and action (columns _cg_reason, _cg_action).

    ``erased`` holds the keyed pseudonyms (``_cg_subject_hash``) of erased subjects; the
    rows come back with the pseudonymiser's pads attached, ready for the column rules.
    """
    t = judgement_instant(run_date)
    rows = run_input(source, policy, run_date).withColumn(
        SUBJECT, normalize_subject(F.col(policy.subject_key).cast("string"), policy.subject_key_normalize)
    )
    rows = with_subject_hash(pseudonymizer.attach(rows), pseudonymizer)
    events = consent_events(consent, policy.purpose, policy.subject_key_normalize, policy.sale_or_sharing)
    erased_flag = erased.select(SUBJECT_HASH).distinct().withColumn(ERASED_FLAG, F.lit(True))
    joined = rows.join(consent_at(events, t), on=SUBJECT, how="left").join(erased_flag, on=SUBJECT_HASH, how="left")
    if policy.check_consent_at is CheckConsentAt.EVENT_AND_RUN:
        joined = with_consent_at_event(joined, events, policy.event_time)
    is_erased = F.coalesce(F.col(ERASED_FLAG), F.lit(False))
    return joined.withColumn(REASON, reason_code(policy, t, F.col(SUBJECT), is_erased)).withColumn(
        ACTION, action_code(policy, F.col(REASON))
    )


def with_column_rules(judged: DataFrame, policy: Policy, context: RuleContext) -> DataFrame:
    """The publishable rows: declared columns only, each through the rule of its row's state."""
    types = {field.name: field.dataType for field in judged.schema.fields}
    state = F.when(F.col(ACTION) == Action.KEPT.value, F.lit("consented")).otherwise(F.lit("anonymized"))
    published = judged.filter(F.col(ACTION).isin(Action.KEPT.value, Action.ANONYMIZED.value))
    source_value = {
        # The subject key is published in its normalised form, so a customer has one
        # pseudonym in every dataset.
        policy.subject_key: F.col(SUBJECT),
    }
    selected = []
    for column in policy.output_columns:
        dtype = types[column.name]
        value = source_value.get(column.name, F.col(column.name))
        consented = column.consented.apply(value, dtype, context)
        anonymized = column.anonymized.apply(value, dtype, context)
        if "pseudonymize" in (column.consented.name, column.anonymized.name):
            # A pseudonym is text whatever the column held: both states publish strings.
            consented, anonymized = consented.cast("string"), anonymized.cast("string")
        selected.append(F.when(state == "consented", consented).otherwise(anonymized).alias(column.name))
    return published.select(*selected, state.alias(STATE_COLUMN))


@dataclass(frozen=True)
class EnforceResult:
    rows_in: int
    rows_out: int
    counts: dict[str, dict[str, int]]
    staging_path: str
    quarantine_path: str | None
    seconds: float


def count_by_reason(judged: DataFrame, policy: Policy) -> dict[str, dict[str, int]]:
    """``{reason: {action: n}}`` for every reason code, zeros included, so reports compare."""
    counts = {reason.value: {action_for(reason, policy).value: 0} for reason in Reason}
    for row in judged.groupBy(REASON, ACTION).count().collect():
        counts[row[REASON]][row[ACTION]] = row["count"]
    return counts


def totals_by_action(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    totals = {action.value: 0 for action in Action}
    for by_action in counts.values():
        for action, n in by_action.items():
            totals[action] += n
    return totals


def run_enforce(
    spark: SparkSession,
    policy: Policy,
    lake: Lake,
    run_date: date,
    run_id: str,
    key: SecretKey,
) -> EnforceResult:
    started = time.monotonic()
    source = read_source(spark, lake, policy)
    pseudonymizer = Pseudonymizer(spark, key)
    erasure = erasure_state(spark, lake, policy, run_date, pseudonymizer)
    # Erased subjects leave what was written before this run, then get their tombstones.
    purge_published(spark, lake, policy, erasure, pseudonymizer)
    record_tombstones(lake, policy.dataset, erasure)
    judged = judge(source, read_consent(spark, lake), erasure.erased, policy, run_date, pseudonymizer)
    judged = judged.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counts = count_by_reason(judged, policy)
        totals = totals_by_action(counts)
        # Counted apart from the judgement: a row lost or doubled by a join shows up here.
        rows_in = run_input(source, policy, run_date).count()
        if rows_in != sum(totals.values()):
            raise StepStateError(
                f"counts do not reconcile: {rows_in} input rows, {sum(totals.values())} judged; nothing is staged"
            )

        output = with_column_rules(judged, policy, RuleContext(pseudonymizer=pseudonymizer))
        staging_path = lake.staging_data(policy.dataset, run_id)
        output.write.mode("overwrite").parquet(staging_path)
        write_text(judged_at_marker(staging_path), judgement_instant(run_date).isoformat() + "\n")

        quarantine_path, withheld = None, 0
        if totals[Action.QUARANTINED.value]:
            quarantine_path = lake.quarantine_rows(policy.dataset, run_id)
            quarantined = judged.filter(F.col(ACTION) == Action.QUARANTINED.value)
            # An erased subject's unjudgeable rows (e.g. no event time) are counted but not kept.
            is_erased = F.coalesce(F.col(ERASED_FLAG), F.lit(False))
            withheld = quarantined.filter(is_erased).count()
            quarantined.filter(~is_erased).select(*source.columns, F.col(REASON).alias(QUARANTINE_REASON)).write.mode(
                "overwrite"
            ).parquet(quarantine_path)
            restrict_to_owner(lake.quarantine_run(policy.dataset, run_id))
    finally:
        judged.unpersist()

    result = EnforceResult(
        rows_in=rows_in,
        rows_out=totals[Action.KEPT.value] + totals[Action.ANONYMIZED.value],
        counts=counts,
        staging_path=staging_path,
        quarantine_path=quarantine_path,
        seconds=round(time.monotonic() - started, 3),
    )
    write_json(
        lake.step_state(policy.dataset, run_id, "enforce"),
        {
            "run_id": run_id,
            "dataset": policy.dataset,
            "run_date": run_date.isoformat(),
            "judged_at": judgement_instant(run_date).isoformat(),
            "policy_path": policy.path,
            "policy_sha256": policy.sha256,
            "key_fingerprint": key.fingerprint,
            "key_version": key.version,
            "erasure": {
                "new_tombstones": erasure.new_tombstones,
                "purged_versions": erasure.purged_versions,
                "purged_quarantine": erasure.purged_quarantine,
                "purged_staging": erasure.purged_staging,
            },
            "rows_in": result.rows_in,
            "rows_out": result.rows_out,
            "totals": totals,
            "counts": counts,
            "staging_path": staging_path,
            "quarantine_path": quarantine_path,
            "quarantine_rows_withheld_for_erasure": withheld,
            "seconds": result.seconds,
        },
    )
    return result
