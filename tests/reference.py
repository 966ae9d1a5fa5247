"""A small, readable pure-Python model of the consent contract (no Spark), used as the
independent reference the Spark results are compared with.

It follows the contract text, not the Spark code: the latest event at or before t
decides, a refusal beats a grant at the same instant, a grant is valid while its
expiry is null or later than t, no event means no consent; then the reason-code
precedence and the policy's actions.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta

GRANT, REFUSALS = "granted", ("withdrawn", "denied")


# The Unicode White_Space property (what the contract trims), not str.isspace(), which
# also counts the separators U+001C..U+001F.
WHITE_SPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)


def normalize(subject: str | None, lower: bool = False) -> str | None:
    if subject is None:
        return None
    value = unicodedata.normalize("NFC", subject.strip(WHITE_SPACE))
    if lower:
        value = value.lower()
    return value or None


@dataclass(frozen=True)
class Event:
    subject: str | None
    purpose: str
    status: str | None
    recorded_at: datetime | None
    expires_at: datetime | None = None
    source: str | None = None


def _loosely(label: str | None) -> str | None:
    """A label as people mistype it, trimmed (ASCII blanks) and lower-cased."""
    return None if label is None else label.strip(" \t\n\x0b\x0c\r").lower()


def _is_faulty(e: Event, purpose: str) -> bool:
    return (
        e.recorded_at is None
        or e.status not in (GRANT, *REFUSALS)
        or (e.status == GRANT and e.expires_at is not None and e.expires_at <= e.recorded_at)
        # The purpose written otherwise, or a GPC signal under another purpose: never a grant.
        or e.purpose != purpose
    )


def _effective_status(e: Event, purpose: str) -> str:
    if _is_faulty(e, purpose):
        return "withdrawn" if e.status == "withdrawn" else "denied"
    return e.status


def applies_to(e: Event, purpose: str, sale_or_sharing: bool) -> bool:
    """An event of the purpose (however its case and surrounding blanks are written), or,
    for selling or sharing, a Global Privacy Control refusal."""
    return _loosely(e.purpose) == _loosely(purpose) or (
        sale_or_sharing and _loosely(e.source) == "gpc" and _loosely(e.status) == "denied"
    )


def deciding_event(
    events: list[Event], subject: str, purpose: str, at: datetime, lower: bool = False, sale_or_sharing: bool = False
):
    """The event that decides consent at ``at``, as (status, expires_at), or None."""
    mine = [e for e in events if applies_to(e, purpose, sale_or_sharing) and normalize(e.subject, lower) == subject]
    # An event that cannot be placed in time is a refusal that always applies (fail closed).
    undated = [e for e in mine if e.recorded_at is None]
    if undated:
        statuses = sorted(_effective_status(e, purpose) for e in undated)
        return (statuses[-1], None)
    eligible = [e for e in mine if e.recorded_at <= at]
    if not eligible:
        return None
    latest = max(e.recorded_at for e in eligible)
    tied = [e for e in eligible if e.recorded_at == latest]
    statuses = {_effective_status(e, purpose) for e in tied}
    if "withdrawn" in statuses:
        return ("withdrawn", None)
    if "denied" in statuses:
        return ("denied", None)
    expiries = [e.expires_at for e in tied]
    finite = [x for x in expiries if x is not None]
    return (GRANT, min(finite) if finite else None)


def is_valid(decision, at: datetime) -> bool:
    return decision is not None and decision[0] == GRANT and (decision[1] is None or decision[1] > at)


def consent_reason(decision, at: datetime) -> str:
    if decision is None:
        return "no_consent"
    status, _ = decision
    if status == "withdrawn":
        return "withdrawn"
    if status != GRANT:
        return "no_consent"
    return "consented" if is_valid(decision, at) else "consent_expired"


def reason_for(
    subject_raw: str | None,
    event_time: datetime | None,
    t: datetime,
    events: list[Event],
    erasures: list[tuple[str | None, datetime | None]],
    purpose: str,
    retention_days: int | None,
    event_and_run: bool = False,
    lower: bool = False,
    sale_or_sharing: bool = False,
) -> str:
    subject = normalize(subject_raw, lower)
    if subject is None:
        return "invalid_subject"
    if event_time is None:
        return "invalid_event_time"
    if any(normalize(s, lower) == subject and (when is None or when <= t) for s, when in erasures):
        return "erased"
    if retention_days is not None and event_time < t - timedelta(days=retention_days):
        return "retention_expired"
    at_t = consent_reason(deciding_event(events, subject, purpose, t, lower, sale_or_sharing), t)
    if at_t != "consented":
        return at_t
    at_event = deciding_event(events, subject, purpose, event_time, lower, sale_or_sharing)
    if event_and_run and not is_valid(at_event, event_time):
        return "not_consented_at_event"
    return "consented"


ACTIONS = {
    "consented": "kept",
    "no_consent": "anonymized",
    "withdrawn": "anonymized",
    "consent_expired": "anonymized",
    "not_consented_at_event": "anonymized",
    "retention_expired": "dropped",
    "erased": "dropped",
    "invalid_subject": "quarantined",
    "invalid_event_time": "quarantined",
    "k_anonymity_suppressed": "dropped",
}
