"""The enforce job: judge every input row, apply the policy's column rules, and write
the staged output, the quarantine and the counts for the run.

Input of a run for run date D is every source row with ``event_time < t`` (t = D+1
00:00 UTC) plus the rows with no event time (which are quarantined); the output is a
full recomputation at ``t``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from functools import reduce
from pathlib import Path

from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DataType, MapType, StructType

from transforms import schemas
from transforms.consent import SUBJECT, consent_at, consent_events, instant, with_consent_at_event
from transforms.coverage import consent_coverage
from transforms.encryption import Encryptor
from transforms.erasure import SUBJECT_HASH, erasure_state, purge_published, record_tombstones, with_subject_hash
from transforms.errors import SchemaError, StepStateError
from transforms.fs import remove
from transforms.incremental import (
    LEDGER_SUBJECT,
    NO_PERIOD,
    Plan,
    ledger_hasher,
    ledger_subjects,
    ledger_subjects_path,
    merged_subjects,
    never_incremental,
    period_key,
    plan_run,
    remove_staged_ledgers,
    reuse_periods,
    verdicts_now,
    with_ledger_subject,
    with_pseudonym,
    write_ledger,
)
from transforms.judgement_counts import (
    ERASED_FLAG,
    SUBJECT_PERIOD_ROWS,
    counts_from_metrics,
    input_rows,
    judgement_metrics,
    metrics_by_period,
    published_by_state,
    subject_period_rows,
    sum_metrics,
    totals_by_action,
)
from transforms.kanonymity import quasi_identifier_values, suppress_small_groups
from transforms.key_continuity import check_key_continuity, write_keys_marker
from transforms.keys import RunKeys
from transforms.lake import Lake, inputs_read_marker, judged_at_marker, judgement_instant
from transforms.lineage import column_lineage
from transforms.partitions import event_instant, partition_folders, period_of
from transforms.policy import STATE_COLUMN, CheckConsentAt, Policy
from transforms.pseudonym import Pseudonymizer
from transforms.quarantine import expire_quarantine, expire_staged_outputs, writing_quarantine
from transforms.reasons import ACTION, REASON, VERDICT, Action, Reason, action_code, reason_code, verdict
from transforms.rules import INTEGRAL_TYPES, NESTED_TYPES, STRING_TYPES, TEMPORAL_TYPES, RuleContext, type_family
from transforms.share import ChainedPseudonymizer, recipient_pseudonymizer
from transforms.source_files import (
    count_source,
    has_no_event_time,
    is_unjudgeable,
    list_source_files,
    may_be_unjudgeable,
    read_files,
    source_path,
    with_fingerprint,
    with_source_file,
)
from transforms.steps import PURGED_FOR_ERASURE
from transforms.storage import delete, private_folder, read_text, restrict_to_owner, write_json, write_text
from transforms.subject_record import write_subject_record
from transforms.subjects import policy_subject

QUARANTINE_REASON = "quarantine_reason"
# Up to this many subjects, their states are broadcast to the join with the rows (a
# hundred bytes or so each, held by the driver and every executor): each input row is
# joined where it is read instead of being shuffled first. Above it the join
# sort-merges, and adaptive execution splits skewed subjects.
BROADCAST_SUBJECTS = 250_000


def read_source(spark: SparkSession, lake: Lake, policy: Policy) -> DataFrame:
    path = lake.path(policy.source)
    source = schemas.read_parquet(spark, path)
    check_source_schema(source.schema, policy, path)
    return source


# Types whose text form is the id itself, as the consent log and erasure requests give it.
SUBJECT_KEY_TYPES = (*STRING_TYPES, *INTEGRAL_TYPES)


def check_source_schema(schema: StructType, policy: Policy, path: str) -> None:
    """Declared columns must exist, fit their rules and not be nested; undeclared ones are ignored."""
    fields = {field.name: field.dataType for field in schema.fields}
    for required in (policy.subject_key, policy.event_time):
        if required not in fields:
            raise SchemaError(f"{path}: column {required!r} named by the policy is missing")
    for name in policy.named_source_columns:
        if ("." in name or "`" in name) and name in fields:
            # Spark reads a dot as a nested field; such a name cannot be referred to plainly.
            raise SchemaError(f"{path}: column {name!r}: a name with a dot or a backtick is not supported; rename it")
    schemas.check_event_time_type(fields[policy.event_time], path, policy.event_time)
    key_type = fields[policy.subject_key]
    if type_family(key_type) not in SUBJECT_KEY_TYPES and not (
        type_family(key_type) == "decimal" and key_type.scale == 0
    ):
        # A float id ("1.2345678E7" as text) would match no consent event: every row
        # judged without consent, silently.
        raise SchemaError(
            f"{path}: subject key {policy.subject_key!r} is {fields[policy.subject_key].simpleString()}; "
            f"it must be one of {', '.join(SUBJECT_KEY_TYPES)} or a decimal without fraction digits"
        )
    if policy.tcf is not None:
        if policy.tcf.column not in fields:
            raise SchemaError(f"{path}: TC string column {policy.tcf.column!r} named by the policy is missing")
        if type_family(fields[policy.tcf.column]) != "string":
            raise SchemaError(f"{path}: TC string column {policy.tcf.column!r} must be a string")
    for column in policy.columns:
        if column.name not in fields:
            outer = column.name.split(".", 1)[0]
            if "." in column.name and outer in fields and type_family(fields[outer]) in NESTED_TYPES:
                raise SchemaError(
                    f"{path}: column {column.name!r} is inside the nested column {outer!r}: declare {outer!r} whole"
                )
            raise SchemaError(f"{path}: declared column {column.name!r} is missing")
        dtype = fields[column.name]
        for state, rule in (("consented", column.consented), ("anonymized", column.anonymized)):
            if not rule.fits(dtype):
                raise SchemaError(
                    f"{path}: column {column.name!r} is {dtype.simpleString()}; "
                    f"rule {rule.text!r} ({state}) does not fit it"
                )
        if column.anonymized.name == "keep" and _holds_a_time(dtype):
            raise SchemaError(
                f"{path}: column {column.name!r} is {dtype.simpleString()}: anonymised rows may not carry an "
                "exact date or time (generalize it or drop it)"
            )
        if column.anonymized.changes_nothing_of(dtype):
            raise SchemaError(
                f"{path}: column {column.name!r} is {dtype.simpleString()}: rule {column.anonymized.text!r} "
                "(anonymized) leaves every value as it is, which anonymised rows may not carry (generalize it "
                "further or drop it)"
            )


def _holds_a_time(dtype: DataType) -> bool:
    """Whether a value of the type is, or holds at any depth, a date or a time."""
    if type_family(dtype) in TEMPORAL_TYPES:
        return True
    if isinstance(dtype, StructType):
        return any(_holds_a_time(f.dataType) for f in dtype.fields)
    if isinstance(dtype, ArrayType):
        return _holds_a_time(dtype.elementType)
    if isinstance(dtype, MapType):
        return _holds_a_time(dtype.keyType) or _holds_a_time(dtype.valueType)
    return False


def read_consent(spark: SparkSession, lake: Lake) -> DataFrame:
    """The consent log; absent means no consent for anyone (fail closed). Present but
    damaged, it stops the run: which subjects' withdrawals it would hide is unknowable."""
    consent = schemas.read_parquet(spark, lake.consent, required=False)
    if consent is None:
        return spark.createDataFrame([], schemas.CONSENT_SCHEMA)
    schemas.require_columns(consent, lake.consent, schemas.CONSENT_COLUMNS)
    schemas.require_readable(consent, lake.consent)
    return consent


def is_run_input(policy: Policy, run_date: date):
    """Whether a row is of the run's input: before ``t``, or with no event time (to be quarantined)."""
    event_time = event_instant(policy)
    return event_time.isNull() | (event_time < instant(judgement_instant(run_date)))


def run_input(source: DataFrame, policy: Policy, run_date: date) -> DataFrame:
    """The run's input rows (``is_run_input``)."""
    return source.filter(is_run_input(policy, run_date))


def with_subject(rows: DataFrame, policy: Policy) -> DataFrame:
    """Adds the normalised subject key (null when missing or blank)."""
    return rows.withColumn(SUBJECT, policy_subject(policy))


def subject_states(
    rows: DataFrame,
    consent: DataFrame,
    erased: DataFrame,
    policy: Policy,
    run_date: date,
    pseudonymizer: Pseudonymizer,
    retired: list[tuple[Pseudonymizer, DataFrame]] = (),
    with_periods: bool = False,
) -> DataFrame:
    """One row per subject of ``rows`` (which carry ``_cg_subject``): the deciding consent
    event at ``t``, whether the subject is erased, and its verdict (``_cg_verdict``);
    with ``with_periods``, also its rows counted per period
    (``judgement_counts.SUBJECT_PERIOD_ROWS``), for an incremental run's ledger and counts.

    Everything that depends on the subject alone is decided here, once per subject
    rather than once per row: a customer's pseudonym is hashed once, under each key, and
    the rows then take their subject's state in a single join.
    """
    t = judgement_instant(run_date)
    known = rows.where(F.col(SUBJECT).isNotNull())
    if with_periods:
        # Where each subject has rows (the periods an incremental run re-judges when its
        # verdict changes), and how many of them are alike, to count them unjudged.
        subjects = subject_period_rows(known, SUBJECT, period_of(policy), policy, t)
    else:
        subjects = known.select(SUBJECT).distinct()
    hashed = with_subject_hash(pseudonymizer.attach(subjects), pseudonymizer)
    events = consent_events(consent, policy.purpose, policy.subject_key_normalize, policy.sale_or_sharing)
    flags = [f"{ERASED_FLAG}_0"]
    erased_flag = erased.select(SUBJECT_HASH).distinct().withColumn(flags[0], F.lit(True))
    states = pseudonymizer.detach(hashed.join(erased_flag, on=SUBJECT_HASH, how="left")).drop(SUBJECT_HASH)
    for index, (retired_key, hashes) in enumerate(retired, start=1):
        retired_hash, flag = f"{SUBJECT_HASH}_{index}", f"{ERASED_FLAG}_{index}"
        flags.append(flag)
        hashed = retired_key.attach(states).withColumn(retired_hash, retired_key.hmac_hex(F.col(SUBJECT)))
        matches = hashes.select(F.col(SUBJECT_HASH).alias(retired_hash), F.lit(True).alias(flag))
        states = retired_key.detach(hashed.join(matches, on=retired_hash, how="left")).drop(retired_hash)
    is_erased = reduce(lambda a, b: a | b, [F.coalesce(F.col(flag), F.lit(False)) for flag in flags])
    states = states.withColumn(ERASED_FLAG, is_erased).drop(*flags)
    # The verdict once per subject, rather than for each of its rows.
    states = states.join(consent_at(events, t), on=SUBJECT, how="left")
    return states.withColumn(VERDICT, verdict(t, F.col(ERASED_FLAG)))


def cached_subject_states(
    source: DataFrame,
    consent: DataFrame,
    erased: DataFrame,
    policy: Policy,
    run_date: date,
    pseudonymizer: Pseudonymizer,
    retired: list[tuple[Pseudonymizer, DataFrame]] = (),
) -> tuple[DataFrame, int]:
    """``subject_states`` of the run's input (with periods when the policy keeps a ledger),
    cached and materialised, and how many subjects they hold (``judge`` broadcasts them
    when they are few). Small next to the rows (one per customer); the caller unpersists
    it."""
    rows = with_subject(run_input(source, policy, run_date), policy)
    keeps_ledger = never_incremental(policy) is None
    states = subject_states(rows, consent, erased, policy, run_date, pseudonymizer, retired, keeps_ledger).cache()
    try:
        subjects = states.count()
    except BaseException:
        states.unpersist()
        raise
    return states, subjects


def judge(
    source: DataFrame,
    consent: DataFrame,
    erased: DataFrame,
    policy: Policy,
    run_date: date,
    pseudonymizer: Pseudonymizer,
    retired: list[tuple[Pseudonymizer, DataFrame]] = (),
    states: DataFrame | None = None,
    subjects: int | None = None,
) -> DataFrame:
    """The run's input rows, each with its reason code and action (columns _cg_reason, _cg_action).

    ``erased`` holds the keyed pseudonyms (``_cg_subject_hash``) of erased subjects, and
    ``retired`` those made with retired keys (with each key's pseudonymiser); ``states``,
    when given, is their ``subject_states`` for this input, already computed, for
    ``subjects`` subjects. ``with_column_rules`` attaches the keys the rules need.
    """
    t = judgement_instant(run_date)
    rows = with_subject(run_input(source, policy, run_date), policy)
    if states is None:
        states = subject_states(rows, consent, erased, policy, run_date, pseudonymizer, retired)
    # A left join: rows with no subject stay, to be quarantined. The states are broadcast
    # when they are few (BROADCAST_SUBJECTS; else when Spark finds them small); otherwise
    # the join sort-merges, splitting skewed subjects (AQE). (Their periods are for the
    # ledger and the derived counts.)
    by_subject = states.drop(SUBJECT_PERIOD_ROWS)
    if subjects is not None and subjects <= BROADCAST_SUBJECTS:
        by_subject = F.broadcast(by_subject)
    joined = rows.join(by_subject, on=SUBJECT, how="left")
    # (The pseudonymiser's pads are attached by with_column_rules, after every join and
    # grouping: rows carrying them through a shuffle would put key material in Spark's
    # local shuffle files.)
    joined = joined.withColumn(ERASED_FLAG, F.coalesce(F.col(ERASED_FLAG), F.lit(False)))
    if policy.check_consent_at is CheckConsentAt.EVENT_AND_RUN:
        events = consent_events(consent, policy.purpose, policy.subject_key_normalize, policy.sale_or_sharing)
        joined = with_consent_at_event(joined, events, policy.event_time)
    # A subject the states do not know has no consent (fail closed).
    subject_verdict = F.coalesce(F.col(VERDICT), F.lit(Reason.NO_CONSENT.value))
    return joined.withColumn(REASON, reason_code(policy, t, F.col(SUBJECT), subject_verdict)).withColumn(
        ACTION, action_code(policy, F.col(REASON))
    )


def source_values(policy: Policy) -> dict:
    """Columns whose rules read something other than the raw source column."""
    # The subject key is published in its normalised form, so a customer has one
    # pseudonym in every dataset.
    return {policy.subject_key: F.col(SUBJECT)}


def rule_context(spark: SparkSession, policy: Policy, keys: RunKeys, pseudonymizer: Pseudonymizer) -> RuleContext:
    """The keyed helpers this policy's rules need, each with its own derived key."""
    uses = {rule.name for rule in policy.rules}
    base_key, extra_keys = keys.hmac, (pseudonymizer,)
    if policy.is_share:
        # A recipient's pseudonyms and date shifts come from its own key.
        recipient = recipient_pseudonymizer(spark, keys.hmac, policy)
        pseudonymizer, base_key, extra_keys = (
            ChainedPseudonymizer(pseudonymizer, recipient),
            recipient.key,
            (pseudonymizer, recipient),
        )
    shift_key = base_key.derive("date shift")
    return RuleContext(
        pseudonymizer=pseudonymizer,
        date_shifter=Pseudonymizer(spark, shift_key, tag="shift") if "date_shift" in uses else None,
        encryptor=Encryptor(spark, keys.encryption) if keys.encryption and "encrypt" in uses else None,
        subject=F.col(SUBJECT),
        extra_keys=extra_keys,
    )


def with_column_rules(judged: DataFrame, policy: Policy, context: RuleContext) -> DataFrame:
    """The publishable rows: declared columns only, each through the rule of its row's state.

    The keyed helpers of ``context`` (their pads) are attached here, after the judgement's
    joins, and no key column is selected into the output.
    """
    types = {field.name: field.dataType for field in judged.schema.fields}
    state = F.when(F.col(ACTION) == Action.KEPT.value, F.lit("consented")).otherwise(F.lit("anonymized"))
    published = judged.filter(F.col(ACTION).isin(Action.KEPT.value, Action.ANONYMIZED.value))
    for helper in (context.date_shifter, context.encryptor, *context.extra_keys):
        if helper is not None:
            published = helper.attach(published)
    sources = source_values(policy)
    selected = []
    for column in policy.output_columns:
        dtype = types[column.name]
        value = sources.get(column.name, F.col(column.name))
        column_context = context.for_column(column.name)
        consented = column.consented.apply(value, dtype, column_context)
        anonymized = column.anonymized.apply(value, dtype, column_context)
        if column.consented.publishes_text or column.anonymized.publishes_text:
            # A pseudonym or a ciphertext is text whatever the column held: both states publish strings.
            consented, anonymized = consented.cast("string"), anonymized.cast("string")
        selected.append(F.when(state == "consented", consented).otherwise(anonymized).alias(column.name))
    outputs = [*selected, state.alias(STATE_COLUMN)]
    if policy.partition_by is not None:
        outputs.append(period_of(policy).alias(policy.partition_column))
    return published.select(*outputs)


def share_summary(spark: SparkSession, staging_path: str, policy: Policy, context: RuleContext) -> dict:
    """What a share's export discloses, for the disclosure log: how many subjects, and
    with which recipient key (its fingerprint)."""
    # An export's subject key is always pseudonymised, one pseudonym per subject.
    exported = spark.read.parquet(staging_path).select(policy.subject_key).distinct()
    return {
        "recipient": policy.recipient,
        "purpose": policy.purpose,
        "dataset": policy.shared_dataset,
        "subjects": exported.count(),
        "recipient_key_fingerprint": context.pseudonymizer.key.fingerprint,
    }


@dataclass(frozen=True)
class EnforceResult:
    rows_in: int
    rows_out: int
    counts: dict[str, dict[str, int]]
    staging_path: str
    quarantine_path: str | None
    seconds: float


def _write_output(judged: DataFrame, policy: Policy, context: RuleContext, staging_path: str) -> dict:
    """Writes the publishable rows of ``judged`` and returns the judgement metrics of all
    of them, collected in the same pass."""
    # One pass judges every row, counts the reasons and writes the output: the judged
    # rows are never cached, which at scale cost more than judging them.
    observation = Observation("consentgate_judgement")
    output = with_column_rules(judged.observe(observation, *judgement_metrics()), policy, context)
    # Rows reach a partition in the order shuffle blocks arrive, which varies from run to
    # run; sorted, a rerun of the same input writes byte-identical files.
    if policy.partition_by is None:
        output.sortWithinPartitions(*output.columns).write.mode("overwrite").parquet(staging_path)
    else:
        # Each period's rows in one task, so one file per period rather than one per task
        # and period (16 tasks x 37 months of small files to list and read); the period
        # column first, the order the partitioned writer needs, so it does not sort again.
        order = [c for c in output.columns if c != policy.partition_column]
        by_period = output.repartition(policy.partition_column).sortWithinPartitions(policy.partition_column, *order)
        by_period.write.partitionBy(policy.partition_column).mode("overwrite").parquet(staging_path)
    return {name: int(value) for name, value in observation.get.items()}


def _fingerprinted(counted: dict[str, dict], listed: dict[str, list]) -> dict[str, dict]:
    """The counted files with the size, modification time and identity listed before they
    were read. A file listed but not read (written meanwhile) or read but no longer listed
    gets none: the next run reads it again, or judges again the periods it held."""
    unknown = [-1, -1, None]
    files = {}
    for name in sorted(set(counted) | set(listed)):
        stat = listed.get(name, unknown) if name in counted else unknown
        files[name] = with_fingerprint(counted.get(name, {"periods": {}, "unjudgeable": 0}), stat)
    return files


def _published_rows_by_period(spark: SparkSession, staged: str, policy: Policy) -> dict[str, dict[str, int]]:
    """``{period: {record_state: rows}}`` of a staged partitioned output."""
    by_period: dict[str, dict[str, int]] = {}
    if not partition_folders(spark, staged):  # nothing staged yet: no month published a row
        return by_period
    for period, state, n in spark.read.parquet(staged).groupBy(policy.partition_column, STATE_COLUMN).count().collect():
        by_period.setdefault(str(period), {})[state] = int(n)
    return by_period


def keep_policy_text(lake: Lake, policy: Policy) -> None:
    """The policy's exact text under ``reports/<dataset>/policies/<sha256>.yml``, once: a
    report names the policy by its hash, and this is what an auditor reads it by, whatever
    the policy file says today."""
    copy = lake.path("reports", policy.dataset, "policies", f"{policy.sha256}.yml")
    if read_text(copy) is not None:
        return
    text = Path(policy.path).read_bytes()
    if hashlib.sha256(text).hexdigest() == policy.sha256:  # (edited since it was loaded: validate refuses the run)
        write_text(copy, text.decode("utf-8"))


def run_enforce(
    spark: SparkSession,
    policy: Policy,
    lake: Lake,
    run_date: date,
    run_id: str,
    keys: RunKeys,
    full: bool = False,
) -> EnforceResult:
    """Judges the run's input and stages the output; ``full`` judges every period even
    when an incremental run could take some from the current version."""
    started = time.monotonic()
    # Before any input is listed: a file that lands after this instant may be missed.
    inputs_read_at = datetime.now(UTC).isoformat(timespec="microseconds")
    from transforms.publish import current_version

    rotations = check_key_continuity(lake, policy.dataset, current_version(lake, policy.dataset), keys)
    keep_policy_text(lake, policy)
    expired_quarantine = expire_quarantine(spark, lake, policy)
    expired_staging = expire_staged_outputs(spark, lake, policy, run_id)
    pseudonymizer = Pseudonymizer(spark, keys.hmac)
    ring = keys.hmac_ring()
    erasure = erasure_state(spark, lake, policy, run_date, pseudonymizer, ring)
    states = previous = subject_count = None
    try:
        # Erased subjects leave what was written before this run, then get their tombstones.
        purge_published(spark, lake, policy, erasure, pseudonymizer, ring)
        # This run's own earlier output (a rerun of the run id) is replaced below.
        delete(lake.step_state(policy.dataset, run_id, PURGED_FOR_ERASURE))
        remove_staged_ledgers(spark, lake, policy.dataset)
        record_tombstones(lake, policy, erasure, keys.hmac.fingerprint)
        # After the erasure purge, which a missing, changed or damaged source must not hold
        # up (the purge reads only what was written before); reading every file's footer
        # finds a damaged one (a damaged data page further in is found only when read).
        source = read_source(spark, lake, policy)
        schemas.require_readable(source, lake.path(policy.source))
        context = rule_context(spark, policy, keys, pseudonymizer)
        consent = read_consent(spark, lake)
        t = judgement_instant(run_date)

        staging_path = lake.staging_data(policy.dataset, run_id)
        # Not validated yet, it may hold what validation will refuse: the run's folder is
        # owner-only, while the output in it keeps its modes and is readable once published.
        private_folder(lake.staging_run(policy.dataset, run_id))
        source_root = lake.path(policy.source)
        source_base = source_path(spark, source_root)
        why_full = never_incremental(policy)
        keeps_ledger = why_full is None
        hasher = ledger_hasher(spark, keys)

        def counted_source(rows: DataFrame) -> tuple[dict, dict]:
            """The files and period input counts of ``rows`` (read straight from the source's files)."""
            counted = with_source_file(rows)
            return count_source(
                counted, period_of(policy), is_run_input(policy, run_date), policy, source_base, NO_PERIOD
            )

        def judged_rows(rows: DataFrame) -> DataFrame:
            return judge(
                rows, consent, erasure.erased, policy, run_date, pseudonymizer, erasure.retired, states, subject_count
            )

        def unstage_and_fail(problem: str) -> None:
            try:
                remove(spark, lake.staging_run(policy.dataset, run_id))
            finally:  # the problem is the reason the run stops, even if the removal failed
                raise StepStateError(f"{problem}; nothing is staged")

        other_key_tombstones = sum(hashes.count() for _, hashes in erasure.retired) if keeps_ledger else 0
        if not keeps_ledger:
            plan = Plan(full=True, reason=why_full)
        elif full:
            plan = Plan(full=True, reason="requested (--full)")
        else:
            plan, previous = plan_run(
                spark,
                lake,
                policy,
                t,
                keys,
                source.schema.simpleString(),
                source_root,
                lambda names: counted_source(read_files(spark, source_root, source.schema, names))[0],
                lambda subjects: verdicts_now(subjects, consent, erasure.erased, policy, t, pseudonymizer, hasher),
                other_key_tombstones,
            )
        if plan.full:
            listed = list_source_files(spark, source_root) if keeps_ledger else None
            rows = source
        else:
            # Only the files holding rows of the periods judged again, and those rows; and
            # every row with no event time (quarantined, counted under no period). Rows of
            # reused periods with no subject are counted there and quarantined below.
            read = read_files(spark, source_root, source.schema, previous.to_read)
            in_judged_periods = period_of(policy).isin(sorted(plan.affected))
            rows = read.filter(in_judged_periods | has_no_event_time(policy))
        # Read by every pass below.
        states, subject_count = cached_subject_states(
            rows, consent, erasure.erased, policy, run_date, pseudonymizer, erasure.retired
        )
        staged_ledger = lake.staged_ledger(policy.dataset, run_id)

        if plan.full:
            judged = judged_rows(source)
            if policy.quasi_identifiers:
                judged = suppress_small_groups(
                    quasi_identifier_values(judged, policy, context, source_values(policy)), policy
                )
            metrics = _write_output(judged, policy, context, staging_path)
            if keeps_ledger:
                # Counted apart from the judgement: each file's rows per period, for the
                # next run, and each period's input, which the judgement must match.
                counted, inputs = counted_source(source)
                files = _fingerprinted(counted, listed)
                by_period = metrics_by_period(states, inputs, policy, period_key)
                if sum_metrics(by_period.values()) != metrics:
                    unstage_and_fail("the judged rows do not reconcile with the counts of their subjects' rows")
                subjects = ledger_subjects(states, pseudonymizer, hasher, ERASED_FLAG)
        else:
            # Each period's reasons follow from the subjects' lists of alike rows: the
            # periods judged again must reconcile with them, and the others are taken over
            # with the counts the ledger has for them.
            judged_keys = {NO_PERIOD} | {period_key(p) for p in plan.affected}
            inputs, written = {}, sum_metrics([])
            if previous.to_read:  # else nothing to judge: every period is taken over
                inputs = {period: n for period, n in counted_source(read)[1].items() if period in judged_keys}
                written = _write_output(judged_rows(rows), policy, context, staging_path)
            judged_by_period = metrics_by_period(states, inputs, policy, period_key)
            if written != sum_metrics(judged_by_period.values()):
                unstage_and_fail("the re-judged periods do not reconcile with the counts of their rows")
            previous_counts = previous.ledger["counts_by_period"]
            published = lake.clean_version(policy.dataset, plan.previous_version)
            reuse_periods(spark, policy, published, staging_path, plan.reused)
            staged_rows = _published_rows_by_period(spark, staging_path, policy)
            for period in sorted(plan.reused):
                if staged_rows.get(str(period), {}) != published_by_state(previous_counts[period_key(period)], policy):
                    unstage_and_fail(
                        f"the month folder {period} of version {plan.previous_version} does not hold the rows a full "
                        "run publishes; run with --full"
                    )
            by_period = {period_key(p): previous_counts[period_key(p)] for p in plan.reused} | judged_by_period
            metrics = sum_metrics(by_period.values())
            files = previous.files
            judged_periods = ledger_subjects(states, pseudonymizer, hasher, ERASED_FLAG)
            subjects = merged_subjects(previous.subjects, judged_periods, sorted(previous.affected))
            plan = replace(plan, affected=frozenset(p for p in plan.affected if period_key(p) in inputs))
        if keeps_ledger:
            subjects.write.mode("overwrite").parquet(ledger_subjects_path(staged_ledger))
            restrict_to_owner(staged_ledger)
        if policy.partition_by is not None and not partition_folders(spark, staging_path):
            # With no rows a partitioned write leaves no file, and validation and readers need the columns.
            with_column_rules(judged_rows(source.limit(0)), policy, context).write.mode("overwrite").parquet(
                staging_path
            )
        counts, withheld = counts_from_metrics(metrics, policy)
        totals = totals_by_action(counts)
        # Counted apart from the judgement: in a full run a row lost or doubled by a join
        # shows up here (an incremental run's counts are derived to match the input; its
        # re-judged and reused periods were checked against them above).
        if not keeps_ledger:
            rows_in = run_input(source, policy, run_date).count()
        else:
            rows_in = sum(input_rows(group) for group in by_period.values())
        if rows_in != sum(totals.values()):
            unstage_and_fail(f"counts do not reconcile: {rows_in} input rows, {sum(totals.values())} judged")
        if keeps_ledger:
            source_schema = source.schema.simpleString()
            write_ledger(staged_ledger, policy, t, keys, source_schema, files, by_period, other_key_tombstones)
        write_text(judged_at_marker(staging_path), t.isoformat() + "\n")
        write_text(inputs_read_marker(staging_path), inputs_read_at + "\n")
        write_keys_marker(staging_path, keys)
        write_subject_record(staging_path, policy)
        if plan.full:
            coverage = consent_coverage(states.select(SUBJECT), consent, policy, t)
        else:
            # The ledger's subjects, known by their ledger hash: every subject of the input,
            # and the erased subjects it ever had (kept, as their rows are not listed).
            def by_ledger_hash(decided: DataFrame) -> DataFrame:
                hashed = with_ledger_subject(with_pseudonym(decided, pseudonymizer), SUBJECT_HASH, hasher)
                return hashed.drop(SUBJECT, SUBJECT_HASH).withColumnRenamed(LEDGER_SUBJECT, SUBJECT)

            every_subject = spark.read.parquet(ledger_subjects_path(staged_ledger)).select(
                F.col(LEDGER_SUBJECT).alias(SUBJECT)
            )
            coverage = consent_coverage(every_subject, consent, policy, t, by_ledger_hash)
        share = share_summary(spark, staging_path, policy, context) if policy.is_share else None

        quarantine_path = None
        if totals[Action.QUARANTINED.value]:
            quarantine_path = lake.quarantine_rows(policy.dataset, run_id)
            # Only rows with no subject or no event time are quarantined: judging just those
            # finds them without a second pass over the whole input (an incremental run
            # reads only the files the ledger says hold them).
            if plan.full:
                holding = source
            else:
                holding = read_files(
                    spark, source_root, source.schema, [n for n, e in files.items() if e["unjudgeable"]]
                )
            # Two filters: the costly test runs only on the rows the cheap one keeps.
            unjudgeable = holding.filter(may_be_unjudgeable(policy)).filter(is_unjudgeable(policy))
            # (k-anonymity only ever suppresses anonymised rows.)
            quarantined = judged_rows(unjudgeable).filter(F.col(ACTION) == Action.QUARANTINED.value)
            # An erased subject's unjudgeable rows (e.g. no event time) are counted but not kept.
            retained = quarantined.filter(~F.col(ERASED_FLAG))
            # The declared columns only, as they arrived: what the policy may publish is what
            # an investigation needs; the undeclared ones are never used (minimisation).
            named = set(policy.named_source_columns)
            raw_columns = [F.col("`" + name.replace("`", "``") + "`") for name in source.columns if name in named]
            with writing_quarantine(lake, policy.dataset, run_id):
                retained.select(*raw_columns, F.col(REASON).alias(QUARANTINE_REASON)).write.mode("overwrite").parquet(
                    quarantine_path
                )
    finally:
        erasure.release()
        if states is not None:
            states.unpersist()
        if previous is not None:
            previous.subjects.unpersist()

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
            "inputs_read_at": inputs_read_at,
            "policy_path": policy.path,
            "policy_sha256": policy.sha256,
            "key_fingerprint": keys.hmac.fingerprint,
            "key_version": keys.hmac.version,
            "keys": keys.describe(),
            "key_rotation": rotations,
            "k_anonymity": (
                {
                    "quasi_identifiers": list(policy.quasi_identifiers),
                    "k_min": policy.k_min,
                    "suppressed": counts[Reason.K_ANONYMITY_SUPPRESSED.value].get(Action.DROPPED.value, 0),
                }
                if policy.quasi_identifiers
                else None
            ),
            "erasure": {
                "new_tombstones": erasure.new_count,
                "purged_versions": erasure.purged_versions,
                "purged_quarantine": erasure.purged_quarantine,
                "purged_staging": erasure.purged_staging,
                "removed_versions_of_unknown_keys": erasure.retired_versions,
                "removed_versions_unsearchable": erasure.unsearchable_versions,
            },
            "rows_in": result.rows_in,
            "rows_out": result.rows_out,
            "totals": totals,
            "counts": counts,
            "staging_path": staging_path,
            "quarantine_path": quarantine_path,
            "quarantine_rows_withheld_for_erasure": withheld,
            "quarantine_expired": expired_quarantine,
            "staging_expired": expired_staging,
            "consent_coverage": coverage,
            "lineage": column_lineage(policy, lake.root),
            "share": share,
            "incremental": plan.describe(),
            "seconds": result.seconds,
        },
    )
    return result
