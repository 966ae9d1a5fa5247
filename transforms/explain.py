"""``consentgate explain``: for a support agent answering a customer's access request,
what the pipeline does with one subject's rows in every dataset, and why.

Per policy: the subject's rows in the run's input counted by reason code and action
(judged by the enforce job's own ``judge`` on the subject's rows alone, so the answer
is the pipeline's, not a re-implementation; k-anonymity, which depends on other
subjects' rows too, is named as a caveat rather than decided here), the consent event that decides the
purpose at ``t`` (status, when it was recorded, its expiry and channel), whether the
subject is erased, how many of its rows the current published version holds, and the
third parties that received its data. It prints no value of the subject's rows, nor
the id it was asked about: counts, reason codes and the subject's own consent events.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import date, datetime

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from transforms.consent import SUBJECT, bears_on, consent_at, consent_events
from transforms.enforce import judge, read_consent, read_source
from transforms.erasure import SUBJECT_HASH, erasure_state
from transforms.errors import MissingKeyError
from transforms.key_continuity import fingerprint_of, recorded_keys
from transforms.keys import RunKeys, SecretKey, recipient_key
from transforms.lake import Lake, judgement_instant
from transforms.policy import Policy
from transforms.pseudonym import Pseudonymizer
from transforms.publish import current_version
from transforms.reasons import ACTION, REASON
from transforms.subjects import normalize_subject


@dataclass
class DatasetExplanation:
    dataset: str
    purpose: str
    rows: dict[str, dict[str, int]]
    deciding_event: dict | None
    consent_events: int
    erased: bool
    published_rows: dict[str, int] | None
    recipients: list[str] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)


_ASKED = "_cg_asked"


def _as_data(spark: SparkSession, value: str | None) -> DataFrame:
    """A value as one broadcast row of data rather than a literal: literals are printed in
    query plans (the Spark UI, event logs), and this one is a person's id or pseudonym."""
    return F.broadcast(spark.createDataFrame([(value,)], f"{_ASKED} string"))


def _rows_where(df: DataFrame, value: Column, row: DataFrame) -> DataFrame:
    """The rows of ``df`` whose ``value`` equals the one row's (none for null)."""
    return df.join(row, value == F.col(_ASKED)).drop(_ASKED)


class _Subject:
    """The asked-for id, normalised by Spark as each policy says (once per normalisation),
    and its pseudonyms, hashed on the driver: one HMAC does not need a Spark job, and
    Python's ``hmac`` gives the same bytes as the Spark HMAC (tests/unit/test_hmac_vectors.py)."""

    def __init__(self, spark: SparkSession, subject_id: str):
        self.spark = spark
        self._asked = spark.createDataFrame([(subject_id,)], f"{_ASKED} string")
        self._normalized: dict[tuple, str | None] = {}

    def normalized_row(self, policy: Policy, for_join: bool = True) -> DataFrame:
        normalized = self._asked.select(normalize_subject(F.col(_ASKED), policy.subject_key_normalize).alias(_ASKED))
        return F.broadcast(normalized) if for_join else normalized

    def rows_of(self, df: DataFrame, column: str, policy: Policy) -> DataFrame:
        """The rows of ``df`` whose ``column`` is this subject's key, normalised as ``policy`` says."""
        # Normalised in a projection first: a join condition must be deterministic, and
        # normalising calls into the JVM (``reflect``), which Spark does not know to be.
        keyed = df.withColumn("_cg_key", normalize_subject(F.col(column).cast("string"), policy.subject_key_normalize))
        return _rows_where(keyed, F.col("_cg_key"), self.normalized_row(policy)).drop("_cg_key")

    def normalized(self, policy: Policy) -> str | None:
        how = policy.subject_key_normalize
        if how not in self._normalized:
            self._normalized[how] = self.normalized_row(policy, for_join=False).first()[0]
        return self._normalized[how]

    def pseudonym(self, policy: Policy, key: SecretKey, recipient: str | None = None) -> str | None:
        """Our pseudonym under ``key``; with ``recipient``, that recipient's pseudonym of it."""
        value = self.normalized(policy)
        if value is None:
            return None
        ours = hmac.new(key.material, value.encode("utf-8"), hashlib.sha256).hexdigest()
        if recipient is None:
            return ours
        return hmac.new(recipient_key(key, recipient).material, ours.encode("utf-8"), hashlib.sha256).hexdigest()


def _iso(column: str):
    # Formatted by Spark in the session's zone (UTC), not by Python's local zone.
    return F.date_format(F.col(column), "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX")


def _deciding_event(consent: DataFrame, subject: _Subject, policy: Policy, t: datetime) -> tuple[dict | None, int]:
    events = consent_events(consent, policy.purpose, policy.subject_key_normalize, policy.sale_or_sharing)
    mine = _rows_where(events, F.col(SUBJECT), subject.normalized_row(policy))
    decided = consent_at(mine, t)
    # The channel of the deciding event, read back from the log (the judgement needs
    # none): the subject's events of this purpose (or GPC refusals, for a sale or
    # sharing purpose) at the deciding instant; an event with no time decides at any.
    relevant = bears_on(policy.purpose, policy.sale_or_sharing)
    undated = F.year("consent_recorded_at") == 9999
    same_instant = F.when(undated, F.col("recorded_at").isNull()).otherwise(
        F.col("recorded_at") == F.col("consent_recorded_at")
    )
    channels = (
        subject.rows_of(consent.filter(relevant), "subject_id", policy)
        .join(decided, same_instant)
        .agg(F.array_sort(F.collect_set(F.col("source").cast("string"))).alias("sources"))
    )
    rows = decided.select(
        "consent_status",
        F.when(~undated, _iso("consent_recorded_at")).alias("recorded_at"),
        _iso("consent_expires_at").alias("expires_at"),
    ).collect()
    count = mine.count()
    if not rows:
        return None, count
    sources = channels.first()["sources"] or []
    event = {
        "status": rows[0]["consent_status"],
        "recorded_at": rows[0]["recorded_at"],
        "expires_at": rows[0]["expires_at"],
        "source": ", ".join(sources) or None,
    }
    return event, count


def _rows_in_version(
    spark: SparkSession, lake: Lake, policy: Policy, version: str, subject: _Subject, keys: RunKeys
) -> dict[str, int]:
    """The subject's rows in one published version (or export), by record state."""
    folder = lake.clean_version(policy.dataset, version)
    published = spark.read.parquet(folder)
    if policy.column(policy.subject_key).consented.name == "pseudonymize":
        # Hashed with the key the version was made with (an older one after a rotation).
        made_with = fingerprint_of(recorded_keys(lake, policy.dataset, folder, version), "hmac")
        key = keys.hmac_ring().get(made_with)
        if key is None:
            raise MissingKeyError(f"{folder}: made with key fingerprint {made_with}, which this run does not have")
        expected = subject.pseudonym(policy, key, policy.recipient)
    else:
        expected = subject.normalized(policy)
    mine = _rows_where(published, F.col(policy.subject_key), _as_data(spark, expected))
    counted = mine.groupBy("record_state").count()
    return {row["record_state"]: row["count"] for row in counted.collect()}


def _links_subject(policy: Policy) -> bool:
    column = policy.column(policy.subject_key)
    return column is not None and not column.consented.removes_value


def _published_rows(spark: SparkSession, lake: Lake, policy: Policy, subject: _Subject, keys: RunKeys) -> dict | None:
    version = current_version(lake, policy.dataset)
    if version is None or not _links_subject(policy):
        return None  # nothing published, or no subject key to find its rows by
    return _rows_in_version(spark, lake, policy, version, subject, keys)


def _caveats(policy: Policy, counts: dict[str, dict[str, int]]) -> list[str]:
    if policy.quasi_identifiers and any("anonymized" in by_action for by_action in counts.values()):
        # Suppression depends on every subject's rows in the group, not on this subject's alone.
        return [
            f"rows shown as anonymized are not published when their group of {', '.join(policy.quasi_identifiers)} "
            f"has fewer than {policy.k_min} customers (k_anonymity_suppressed); the run report counts them"
        ]
    return []


def _is_erased(erasure, subject: _Subject, policy: Policy, pseudonymizer: Pseudonymizer) -> bool:
    """Whether the subject is erased at t, whether or not it has rows in this dataset
    (a subject erased under a retired key included)."""
    for key_pseudonymizer, hashes in [(pseudonymizer, erasure.erased), *erasure.retired]:
        hashed = subject.pseudonym(policy, key_pseudonymizer.key)
        if _rows_where(hashes, F.col(SUBJECT_HASH), _as_data(subject.spark, hashed)).limit(1).count():
            return True
    return False


def explain_subject(
    spark: SparkSession, lake: Lake, policies: list[Policy], subject_id: str, run_date: date, keys: RunKeys
) -> list[DatasetExplanation]:
    t = judgement_instant(run_date)
    consent = read_consent(spark, lake)
    pseudonymizer = Pseudonymizer(spark, keys.hmac)
    subject = _Subject(spark, subject_id)
    erasures = {}  # who is erased depends only on how subject keys are normalised
    explanations = []
    try:
        for policy in policies:
            source = read_source(spark, lake, policy)
            rows = subject.rows_of(source, policy.subject_key, policy)
            if policy.subject_key_normalize not in erasures:
                erasures[policy.subject_key_normalize] = erasure_state(
                    spark, lake, policy, run_date, pseudonymizer, keys.hmac_ring(), find_new=False
                )
            erasure = erasures[policy.subject_key_normalize]
            judged = judge(rows, consent, erasure.erased, policy, run_date, pseudonymizer, erasure.retired)
            counts: dict[str, dict[str, int]] = {}
            for row in judged.groupBy(REASON, ACTION).count().collect():
                counts.setdefault(row[REASON], {})[row[ACTION]] = row["count"]
            event, history = _deciding_event(consent, subject, policy, t)
            explanations.append(
                DatasetExplanation(
                    dataset=policy.dataset,
                    purpose=policy.purpose,
                    rows=dict(sorted(counts.items())),
                    deciding_event=event,
                    consent_events=history,
                    erased=_is_erased(erasure, subject, policy, pseudonymizer),
                    published_rows=_published_rows(spark, lake, policy, subject, keys),
                    caveats=_caveats(policy, counts),
                )
            )
    finally:
        for erasure in erasures.values():
            erasure.release()
    # A recipient whose current export (a share keeps no other) holds the subject's rows is
    # named on the share and on the dataset it shares; earlier exports are in the
    # disclosure log, which counts subjects but does not name them.
    for share, shared in zip(policies, explanations, strict=True):
        if share.is_share and shared.published_rows:
            for explained, policy in zip(explanations, policies, strict=True):
                if policy.shared_dataset == share.shared_dataset and share.recipient not in explained.recipients:
                    explained.recipients.append(share.recipient)
    return explanations


def render_text(explanations: list[DatasetExplanation], run_date: date) -> list[str]:
    t = judgement_instant(run_date).isoformat()
    lines = [f"judged at t = {t} (run date {run_date.isoformat()})"]
    for e in explanations:
        lines.append(f"{e.dataset} (purpose {e.purpose}):")
        if not e.rows:
            lines.append("  no rows of this subject in the run's input")
        for reason, by_action in e.rows.items():
            for action, n in by_action.items():
                lines.append(f"  {n} rows: {reason} -> {action}")
        if e.deciding_event is None:
            lines.append(f"  consent for {e.purpose}: no event recorded before t ({e.consent_events} events in all)")
        else:
            d = e.deciding_event
            expiry = f", expires {d['expires_at']}" if d["expires_at"] else ""
            when = d["recorded_at"] or "with no time (counts as a refusal)"
            lines.append(
                f"  consent for {e.purpose}: decided by a '{d['status']}' event recorded {when}{expiry}, "
                f"via {d['source']} ({e.consent_events} events in all)"
            )
        if e.erased:
            lines.append("  erased: yes (its rows are not published and a tombstone keeps them out)")
        if e.published_rows is None:
            lines.append("  current published version: none, or it does not carry the subject key")
        else:
            held = ", ".join(f"{n} {state}" for state, n in sorted(e.published_rows.items())) or "no rows"
            lines.append(f"  current published version: {held} linked to this subject (anonymised rows carry no link)")
        held_by = ", ".join(e.recipients) or "no current export of the share policies given"
        lines.append(
            f"  held by third parties now: {held_by} (earlier exports: reports/disclosures.jsonl counts, "
            "does not name, the customers of each)"
        )
        lines += [f"  note: {caveat}" for caveat in e.caveats]
    return lines
