"""Effective consent of each subject for one purpose, at the run's instant and at
each event's own time.

Rules (the contract): the event with the latest ``recorded_at <= t`` decides; at the
same instant a refusal beats a grant; it is valid when it is a grant whose
``expires_at`` is null or later than ``t``; no event means no consent; events recorded
after ``t`` are ignored. Faulty events fail closed: an unknown status, a grant that
expires before it was recorded, an event with no ``recorded_at`` (which wins over
everything, as it cannot be placed in time), or one whose purpose matches only once
trimmed and lower-cased counts as a refusal (a withdrawal when its status says so).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from transforms.subjects import normalize_subject

SUBJECT = "_cg_subject"
GRANTED, WITHDRAWN, DENIED = "granted", "withdrawn", "denied"
# Far beyond any real instant: where a faulty event with no time sorts.
_END_OF_TIME_MICROS = 253402300799000000  # 9999-12-31 23:59:59 UTC


def instant(moment: datetime) -> Column:
    """A timestamp literal for an aware datetime, independent of the session time zone."""
    seconds = int(moment.timestamp())
    return F.timestamp_micros(F.lit(seconds * 1_000_000 + moment.microsecond))


def consent_events(
    consent: DataFrame, purpose: str | None, normalization: Iterable[str] = (), sale_or_sharing: bool = False
) -> DataFrame:
    """The purpose's events, one row each, with a normalised subject and a sort position
    (every purpose's events, with their ``purpose``, when ``purpose`` is None).

    For a purpose that sells or shares data, a Global Privacy Control signal (``source:
    gpc``, ``status: denied``) recorded under any purpose is a refusal of this one too.

    ``decision_order`` sorts the events of one subject so that the deciding one comes last:
    by time, then grants before refusals (a refusal wins a tie), then, among grants, the
    one expiring first last (the more cautious grant wins a tie).
    """
    status = F.col("status")
    is_faulty = (
        F.col("recorded_at").isNull()
        | ~status.isin(GRANTED, WITHDRAWN, DENIED)
        | status.isNull()
        | ((status == GRANTED) & F.coalesce(F.col("expires_at") <= F.col("recorded_at"), F.lit(False)))
    )
    effective_time = F.coalesce(F.col("recorded_at"), F.timestamp_micros(F.lit(_END_OF_TIME_MICROS)))
    if purpose is None:
        relevant = F.lit(True)
    else:
        relevant = bears_on(purpose, sale_or_sharing)
        # A purpose written otherwise ("Analytics ", "ANALYTICS") is this purpose, but a
        # faulty event of it: it can refuse (or withdraw) consent, never grant it.
        is_faulty = is_faulty | ~F.coalesce(F.col("purpose") == F.lit(purpose), F.lit(False))
    is_grant = (status == GRANTED) & ~is_faulty
    return (
        consent.filter(relevant)
        .select(
            normalize_subject(F.col("subject_id"), normalization).alias(SUBJECT),
            *([F.col("purpose")] if purpose is None else []),
            effective_time.alias("consent_time"),
            F.when(is_grant, F.lit(GRANTED))
            .when(status == WITHDRAWN, F.lit(WITHDRAWN))
            .otherwise(F.lit(DENIED))
            .alias("consent_status"),
            F.when(is_grant, F.col("expires_at")).alias("consent_expires_at"),
            F.col("recorded_at").isNull().alias("has_no_time"),
        )
        .filter(F.col(SUBJECT).isNotNull())
    )


def bears_on(purpose: str, sale_or_sharing: bool) -> Column:
    """Whether a consent event is about ``purpose``; for a sale or sharing purpose, also
    whether it is a GPC refusal."""
    relevant = names_purpose(purpose)
    if sale_or_sharing:
        relevant = relevant | ((loosely(F.col("source")) == "gpc") & (loosely(F.col("status")) == DENIED))
    return relevant


def names_purpose(purpose: str) -> Column:
    """Whether an event's ``purpose`` is ``purpose``: written as it, or so once trimmed and
    lower-cased (such an event is faulty: see ``consent_events``)."""
    return (F.col("purpose") == F.lit(purpose)) | (loosely(F.col("purpose")) == F.lit(purpose.strip().lower()))


def loosely(text: Column) -> Column:
    """A label as people mistype it: trimmed and lower-cased (for matching refusals)."""
    return F.lower(F.regexp_replace(text, r"^\s+|\s+$", ""))


def _decision_key() -> Column:
    # Larger sorts later: refusals after grants; among grants, the earliest expiry last
    # (a null expiry never expires and so sorts first).
    expiry_rank = -F.coalesce(F.unix_micros(F.col("consent_expires_at")), F.lit(_END_OF_TIME_MICROS))
    refusal_rank = F.when(F.col("consent_status") == GRANTED, 0).otherwise(
        F.when(F.col("consent_status") == DENIED, 1).otherwise(2)
    )
    return F.struct(
        F.col("consent_time").alias("t"),
        refusal_rank.alias("r"),
        expiry_rank.alias("e"),
    )


def consent_at(events: DataFrame, t: datetime, by: tuple[str, ...] = (SUBJECT,)) -> DataFrame:
    """One row per subject (per ``by``) with the deciding event at ``t``: status, expiry, recorded time."""
    eligible = events.filter((F.col("consent_time") <= instant(t)) | F.col("has_no_time"))
    deciding = F.max_by(F.struct("consent_status", "consent_expires_at", "consent_time"), _decision_key())
    return (
        eligible.groupBy(*by)
        .agg(deciding.alias("d"))
        .select(
            *by,
            F.col("d.consent_status").alias("consent_status"),
            F.col("d.consent_expires_at").alias("consent_expires_at"),
            F.col("d.consent_time").alias("consent_recorded_at"),
        )
    )


def is_valid_at(moment: Column) -> Column:
    """Whether the joined deciding event is a grant still in force at ``moment``."""
    return (F.col("consent_status") == GRANTED) & (
        F.col("consent_expires_at").isNull() | (F.col("consent_expires_at") > moment)
    )


def with_consent_at_event(rows: DataFrame, events: DataFrame, event_time: str) -> DataFrame:
    """Adds ``has_consent_at_event``: was consent valid at each row's own event time?

    An as-of join without a range join: consent events and data rows of a subject are
    sorted into one sequence and each data row takes the last consent event before it,
    so the cost is one sort, however long the histories are. At the same instant the
    consent event comes first (recorded at or before the event counts).
    """
    marker = "_cg_is_data_row"
    data = rows.withColumn(marker, F.lit(True)).withColumn(
        "_cg_order", F.struct(F.col(event_time).cast("timestamp").alias("t"), F.lit(3).alias("r"), F.lit(0).alias("e"))
    )
    timed_events = events.filter(~F.col("has_no_time")).select(
        SUBJECT,
        F.lit(False).alias(marker),
        _decision_key().alias("_cg_order"),
        F.struct("consent_status", "consent_expires_at").alias("_cg_consent"),
    )
    combined = data.unionByName(timed_events, allowMissingColumns=True)
    history = Window.partitionBy(SUBJECT).orderBy("_cg_order").rowsBetween(Window.unboundedPreceding, 0)
    latest = F.last("_cg_consent", ignorenulls=True).over(history)
    judged = combined.withColumn("_cg_latest", latest).filter(F.col(marker))
    valid = (F.col("_cg_latest.consent_status") == GRANTED) & (
        F.col("_cg_latest.consent_expires_at").isNull()
        | (F.col("_cg_latest.consent_expires_at") > F.col(event_time).cast("timestamp"))
    )
    return judged.withColumn("has_consent_at_event", F.coalesce(valid, F.lit(False))).drop(
        marker, "_cg_order", "_cg_consent", "_cg_latest"
    )
