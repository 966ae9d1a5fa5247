"""Reason codes: every input row gets exactly one, and an action follows from it.

Precedence when several apply (the contract): invalid_subject, invalid_event_time,
erased, retention_expired, the consent at ``t`` (no_consent, withdrawn,
consent_expired), a TC string that refuses a mapped TCF purpose (no_consent), then,
with ``check_consent_at: event_and_run``, the consent at the event's own time
(not_consented_at_event). A row that would be anonymised but whose
quasi-identifiers are shared by fewer than ``k_min`` anonymised rows is then
``k_anonymity_suppressed`` (see ``kanonymity``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pyspark.sql import Column
from pyspark.sql import functions as F

from transforms.consent import GRANTED, WITHDRAWN, instant, is_valid_at
from transforms.partitions import event_instant
from transforms.policy import CheckConsentAt, OnNoConsent, OnRetentionExpired, Policy


class Reason(StrEnum):
    CONSENTED = "consented"
    NO_CONSENT = "no_consent"
    WITHDRAWN = "withdrawn"
    CONSENT_EXPIRED = "consent_expired"
    NOT_CONSENTED_AT_EVENT = "not_consented_at_event"
    RETENTION_EXPIRED = "retention_expired"
    ERASED = "erased"
    INVALID_SUBJECT = "invalid_subject"
    INVALID_EVENT_TIME = "invalid_event_time"
    K_ANONYMITY_SUPPRESSED = "k_anonymity_suppressed"


class Action(StrEnum):
    KEPT = "kept"
    ANONYMIZED = "anonymized"
    DROPPED = "dropped"
    QUARANTINED = "quarantined"


ACTIONS_IN_OUTPUT = (Action.KEPT, Action.ANONYMIZED)
# The judged rows carry their reason and action in these columns until the output is selected.
REASON = "_cg_reason"
ACTION = "_cg_action"
# Each subject's verdict at ``t`` (``verdict``), in its consent state.
VERDICT = "_cg_verdict"


def action_for(reason: Reason, policy: Policy) -> Action:
    no_consent = Action.ANONYMIZED if policy.on_no_consent is OnNoConsent.ANONYMIZE else Action.DROPPED
    return {
        Reason.CONSENTED: Action.KEPT,
        Reason.NO_CONSENT: no_consent,
        Reason.WITHDRAWN: no_consent,
        Reason.CONSENT_EXPIRED: no_consent,
        Reason.NOT_CONSENTED_AT_EVENT: no_consent,
        Reason.RETENTION_EXPIRED: (
            Action.ANONYMIZED if policy.on_retention_expired is OnRetentionExpired.ANONYMIZE else Action.DROPPED
        ),
        Reason.ERASED: Action.DROPPED,
        Reason.INVALID_SUBJECT: Action.QUARANTINED,
        Reason.INVALID_EVENT_TIME: Action.QUARANTINED,
        Reason.K_ANONYMITY_SUPPRESSED: Action.DROPPED,
    }[reason]


def consent_at_t_cases(at_t: Column) -> list[tuple[Column, Reason]]:
    """The reasons the joined deciding event gives at ``t``, in precedence order (a row
    with none of them is consented); part of each subject's ``verdict``."""
    status = F.col("consent_status")
    return [
        (status.isNull(), Reason.NO_CONSENT),
        (status == WITHDRAWN, Reason.WITHDRAWN),
        (status != GRANTED, Reason.NO_CONSENT),
        (~is_valid_at(at_t), Reason.CONSENT_EXPIRED),
    ]


def verdict(t: datetime, is_erased: Column) -> Column:
    """What decides all of a subject's rows at ``t`` (erased, or the reason the joined
    deciding consent event gives, else consented): the subject-wide part of ``reason_code``."""
    outcome = F.when(is_erased, F.lit(Reason.ERASED.value))
    for condition, reason in consent_at_t_cases(instant(t)):
        outcome = outcome.when(condition, F.lit(reason.value))
    return outcome.otherwise(F.lit(Reason.CONSENTED.value))


def past_retention(policy: Policy, t: datetime, event_time: Column) -> Column:
    if policy.retention_days is None:
        return F.lit(False)
    return event_time < instant(t - timedelta(days=policy.retention_days))


def tcf_refuses(policy: Policy) -> Column:
    """Whether the row's TC string refuses one of the policy's TCF purposes."""
    if policy.tcf is None:
        return F.lit(False)
    # The TC string captured with the event must consent to every mapped TCF purpose.
    from transforms.tcf import has_purposes

    return ~has_purposes(F.col(policy.tcf.column), policy.tcf.purposes)


def reason_from(
    subject_verdict: Column,
    has_subject: Column,
    has_event_time: Column,
    is_past_retention: Column,
    is_refused_by_tcf: Column,
    refused_at_event: Column | None = None,
) -> Column:
    """The reason, in the contract's precedence, from the subject's ``verdict`` and what
    the row adds to it; used for rows and for counts of alike rows."""
    reason = (
        F.when(~has_subject, F.lit(Reason.INVALID_SUBJECT.value))
        .when(~has_event_time, F.lit(Reason.INVALID_EVENT_TIME.value))
        .when(subject_verdict == Reason.ERASED.value, F.lit(Reason.ERASED.value))
        .when(is_past_retention, F.lit(Reason.RETENTION_EXPIRED.value))
        .when(subject_verdict != Reason.CONSENTED.value, subject_verdict)
        .when(is_refused_by_tcf, F.lit(Reason.NO_CONSENT.value))
    )
    if refused_at_event is not None:
        reason = reason.when(refused_at_event, F.lit(Reason.NOT_CONSENTED_AT_EVENT.value))
    return reason.otherwise(F.lit(Reason.CONSENTED.value))


def reason_code(policy: Policy, t: datetime, subject: Column, subject_verdict: Column) -> Column:
    """The row's reason, from its subject's ``verdict`` and the row; see the module's precedence."""
    event_time = event_instant(policy)
    at_event = None
    if policy.check_consent_at is CheckConsentAt.EVENT_AND_RUN:
        at_event = ~F.col("has_consent_at_event")
    return reason_from(
        subject_verdict,
        subject.isNotNull(),
        event_time.isNotNull(),
        past_retention(policy, t, event_time),
        tcf_refuses(policy),
        at_event,
    )


def action_code(policy: Policy, reason: Column) -> Column:
    mapping = F.create_map(*[item for r in Reason for item in (F.lit(r.value), F.lit(action_for(r, policy).value))])
    return mapping[reason]
