"""Consent coverage: of the subjects in a run's input, how many have valid consent at
``t`` for each purpose in the consent log, and why the others do not. Counts only.

It reads the consent log alone, purpose by purpose, by the same deciding-event rule as
the judgement; Global Privacy Control signals across purposes and TC strings are not
applied here (the run's own purpose is judged exactly in the report's ``counts``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from transforms.consent import (
    GRANTED,
    SUBJECT,
    WITHDRAWN,
    consent_at,
    consent_events,
    instant,
    is_valid_at,
    names_purpose,
)
from transforms.policy import Policy

STATES = ("consented", "withdrawn", "expired", "refused", "no_event")
MAX_PURPOSES = 20
# A purpose is a label, but the log is input: a value that does not look like one, or
# that fewer than this many of the run's subjects have an event for (an id or a name
# typed into the column, say), is counted without its text.
MIN_SUBJECTS_TO_NAME = 5
_PURPOSE = re.compile(r"[a-z][a-z0-9_]{0,40}(:[a-z0-9][a-z0-9_.-]{0,40})?")
UNLISTED = "(unlisted purposes)"


def as_judged(consent: DataFrame, purpose: str) -> DataFrame:
    """The log with the run's own purpose written otherwise ("Analytics ") counted under
    it, as the judgement counts such an event: a refusal, or a withdrawal."""
    mistyped = names_purpose(purpose) & (F.col("purpose") != F.lit(purpose))
    return consent.withColumn(
        "status", F.when(mistyped & (F.col("status") != WITHDRAWN), F.lit(None)).otherwise(F.col("status"))
    ).withColumn("purpose", F.when(mistyped, F.lit(purpose)).otherwise(F.col("purpose")))


def consent_coverage(
    input_subjects: DataFrame,
    consent: DataFrame,
    policy: Policy,
    t: datetime,
    identify: Callable[[DataFrame], DataFrame] | None = None,
) -> dict:
    """``input_subjects``: the run's input rows' subjects (``_cg_subject``): normalised,
    or as ``identify`` turns the consent log's normalised subjects into (a hash)."""
    # Counted and joined: computed once.
    subjects = input_subjects.select(SUBJECT).where(F.col(SUBJECT).isNotNull()).distinct().cache()
    events = consent_events(as_judged(consent, policy.purpose), None, policy.subject_key_normalize)
    decided = consent_at(events, t, by=(SUBJECT, "purpose"))
    if identify is not None:
        decided = identify(decided)
    state = (
        F.when(is_valid_at(instant(t)), F.lit("consented"))
        .when(F.col("consent_status") == WITHDRAWN, F.lit("withdrawn"))
        .when(F.col("consent_status") == GRANTED, F.lit("expired"))
        .otherwise(F.lit("refused"))
    )
    counted = decided.join(subjects, on=SUBJECT).groupBy("purpose", state.alias("state")).count()
    try:
        subject_count = subjects.count()
        rows = counted.collect()
    finally:
        subjects.unpersist()
    by_purpose: dict[str | None, dict[str, int]] = {}
    for row in rows:
        by_state = by_purpose.setdefault(row["purpose"], dict.fromkeys(STATES, 0))
        by_state[row["state"]] += row["count"]

    def named(purpose: str | None) -> bool:
        if purpose == policy.purpose:
            return True
        well_formed = purpose is not None and _PURPOSE.fullmatch(purpose) is not None
        return well_formed and sum(by_purpose[purpose].values()) >= MIN_SUBJECTS_TO_NAME

    # The run's own purpose always, then those most subjects have a say in, so that
    # reports stay readable.
    ranked = sorted(
        (p for p in by_purpose if named(p)), key=lambda p: (p != policy.purpose, -sum(by_purpose[p].values()), p)
    )
    purposes = {p: by_purpose[p] for p in ranked[:MAX_PURPOSES]}
    for purpose, by_state in by_purpose.items():
        if purpose not in purposes:
            unlisted = purposes.setdefault(UNLISTED, dict.fromkeys(STATES, 0))
            for state, n in by_state.items():
                unlisted[state] += n
    if policy.purpose not in purposes:
        purposes[policy.purpose] = dict.fromkeys(STATES, 0)
    for purpose, by_state in purposes.items():
        # The unlisted row adds up several purposes: it counts (subject, purpose) pairs.
        if purpose != UNLISTED:
            by_state["no_event"] = subject_count - sum(by_state.values())
    return {"purpose": policy.purpose, "subjects": subject_count, "purposes": dict(sorted(purposes.items()))}
