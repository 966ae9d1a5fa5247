"""An independent check of the judgement, for validation: which published subjects
have valid consent at ``t``, worked out by a different code path than the enforce job.

The enforce job picks each subject's deciding event with one ``max_by`` over a sort key
(``transforms.consent``). This check uses plain aggregates and a join instead: the
subject's latest recorded instant at or before ``t``; every event at that instant must
be a well-formed grant, the earliest of their expiries must be after ``t``, and no
event may lack a time. The pseudonyms are computed on the driver with Python's ``hmac``,
not with the Spark HMAC. Subjects erased with the run's key (the lake's tombstones) are
not valid either. It is a necessary condition only: GPC signals, TC strings,
``event_and_run`` and erasure under retired keys remove more subjects, never fewer, so
every published consented subject must be in this set.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from transforms.policy import Policy
from transforms.subjects import normalize_subject

PSEUDONYM = "_cg_valid_subject"


def valid_subjects(consent: DataFrame, policy: Policy, t: datetime) -> DataFrame:
    """Normalised subject keys whose consent to the policy's purpose is valid at ``t``."""
    t_literal = F.lit(t)  # an aware datetime: the same instant whatever the session time zone
    # The purpose written otherwise (case, surrounding blanks) is still the customer's
    # word on it: such an event is never a grant, so it can only take consent away.
    written_exactly = F.col("purpose") == policy.purpose
    this_purpose = F.lower(F.btrim(F.col("purpose"), F.lit(" \t\n\r\f\x0b"))) == policy.purpose.strip().lower()
    events = consent.filter(written_exactly | this_purpose).select(
        normalize_subject(F.col("subject_id"), policy.subject_key_normalize).alias("subject"),
        F.when(written_exactly, F.col("status")).alias("status"),
        "recorded_at",
        "expires_at",
    )
    events = events.filter(
        F.col("subject").isNotNull() & (F.col("recorded_at").isNull() | (F.col("recorded_at") <= t_literal))
    )
    latest = events.groupBy("subject").agg(
        F.max("recorded_at").alias("latest"),
        F.max(F.col("recorded_at").isNull().cast("int")).alias("untimed"),
    )
    well_formed_grant = F.coalesce(
        (F.col("status") == "granted") & (F.col("expires_at").isNull() | (F.col("expires_at") > F.col("recorded_at"))),
        F.lit(False),
    )
    deciding = events.join(latest, "subject").filter(F.col("recorded_at") == F.col("latest"))
    verdict = deciding.groupBy("subject", "untimed").agg(
        F.min(well_formed_grant.cast("int")).alias("all_grants"),
        F.min(F.coalesce(F.col("expires_at"), F.lit(datetime(9999, 12, 31)).cast("timestamp"))).alias("expiry"),
    )
    return verdict.filter((F.col("untimed") == 0) & (F.col("all_grants") == 1) & (F.col("expiry") > t_literal)).select(
        "subject"
    )


def _hmac_hex(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


OURS = "_cg_our_pseudonym"


def applies_to(policy: Policy) -> bool:
    """Whether the output's consented rows name their subject (kept or pseudonymised), so
    that the check can find them."""
    subject = policy.column(policy.subject_key)
    return subject is not None and subject.consented.name in ("pseudonymize", "keep")


def valid_pseudonyms(
    spark: SparkSession, subjects: DataFrame, key: bytes, recipient_key: bytes | None = None
) -> DataFrame:
    """The subjects (``subject``) with our pseudonyms (``OURS``), hashed on the driver with
    Python's hmac, and what the output holds for them (``PSEUDONYM``): ours, or for a share
    the recipient's pseudonym of ours (``recipient_key``). Subjects come to the driver and
    their pseudonyms go back as Arrow tables (hundreds of thousands of rows)."""
    import pyarrow as pa

    keys = subjects.select("subject").toArrow().column("subject").to_pylist()
    ours = [_hmac_hex(key, subject) for subject in keys]
    published = [_hmac_hex(recipient_key, pseudonym) for pseudonym in ours] if recipient_key else ours
    table = pa.table(
        {
            "subject": pa.array(keys, pa.string()),
            OURS: pa.array(ours, pa.string()),
            PSEUDONYM: pa.array(published, pa.string()),
        }
    )
    return spark.createDataFrame(table)


def unconsented_published(
    spark: SparkSession,
    consented_rows: DataFrame,
    consent: DataFrame,
    policy: Policy,
    t: datetime,
    key: bytes,
    recipient_key: bytes | None = None,
    erased: DataFrame | None = None,
) -> DataFrame | None:
    """Published consented rows whose subject is not in the independently computed valid
    set (expected: none); None when the policy does not publish a matchable subject key.
    ``erased`` holds the erasure tombstones' hashes made with ``key`` (``_cg_subject_hash``,
    our pseudonyms): those subjects are not valid whatever their consent."""
    if not applies_to(policy):
        return None
    subject = policy.column(policy.subject_key)
    valid = valid_pseudonyms(spark, valid_subjects(consent, policy, t), key, recipient_key)
    if erased is not None:
        valid = valid.join(erased, valid[OURS] == erased["_cg_subject_hash"], "left_anti")
    if subject.consented.name == "keep":
        valid = valid.select(F.col("subject").alias(PSEUDONYM))
    return consented_rows.join(valid, consented_rows[policy.subject_key] == valid[PSEUDONYM], "left_anti").select(
        F.lit(1).alias("unconsented")
    )
