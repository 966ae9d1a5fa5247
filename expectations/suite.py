"""The expectations a staged output must meet before it is published, built from the
policy and the counts the enforce step recorded.

Expectations are grouped by the slice of the output they apply to: ``all`` rows,
``consented`` rows and ``anonymized`` rows (the rows' ``record_state``). Each slice is
validated as its own batch, so no row-condition syntax is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import great_expectations.expectations as gxe
from pyspark.sql.types import DataType

from transforms.policy import STATE_COLUMN, OnNoConsent, OnRetentionExpired, Policy
from transforms.rules import DEFAULT_MASK_VISIBLE, SCRUB_PATTERNS, type_family


def mask_pattern(visible: int) -> str:
    """A masked value: stars then at most ``visible`` characters, or a short value whole
    (``.`` matching line breaks too: a masked value may hold one)."""
    return rf"(?s)^(\*+.{{{visible}}}|.{{0,{visible}}})$"


PSEUDONYM_PATTERN = r"^[0-9a-f]{64}$"
# Padded base64 of a 12-byte nonce, the ciphertext and a 16-byte tag: at least 28 bytes,
# so at least ten groups of four characters (nine hold only 27).
CIPHERTEXT_PATTERN = r"^(?:[A-Za-z0-9+/]{4}){9,}(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{4})$"
EMAIL_PATTERN = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"
PHONE_PATTERN = r"\+?[0-9][0-9 ().-]{7,}[0-9]"


@dataclass(frozen=True)
class SliceExpectations:
    slice_name: str
    expectations: list


def publishable_states(policy: Policy) -> list[str]:
    """What a row may be published as: a policy that drops rows without consent and rows
    past the retention (every share does) publishes no anonymised row at all."""
    if policy.on_no_consent is OnNoConsent.DROP and policy.on_retention_expired is OnRetentionExpired.DROP:
        return ["consented"]
    return ["consented", "anonymized"]


def published_columns(policy: Policy) -> list[str]:
    """The output's columns in order; a partitioned output's partition column comes last."""
    partition = [policy.partition_column] if policy.partition_by is not None else []
    return [*(c.name for c in policy.output_columns), STATE_COLUMN, *partition]


def build_suite(
    policy: Policy,
    output_columns: list[str],
    string_columns: set[str],
    totals: dict[str, int],
    judged_at: datetime,
) -> list[SliceExpectations]:
    everything = [
        gxe.ExpectTableColumnsToMatchOrderedList(column_list=published_columns(policy)),
        gxe.ExpectTableRowCountToEqual(value=totals["kept"] + totals["anonymized"]),
        gxe.ExpectColumnValuesToNotBeNull(column=STATE_COLUMN),
        gxe.ExpectColumnValuesToBeInSet(column=STATE_COLUMN, value_set=publishable_states(policy)),
    ]
    consented = [gxe.ExpectTableRowCountToEqual(value=totals["kept"])]
    anonymized = [gxe.ExpectTableRowCountToEqual(value=totals["anonymized"])]

    for column in policy.output_columns:
        name = column.name
        if name not in output_columns:
            continue  # the column-list expectation reports it
        if column.consented.name == "pseudonymize":
            consented.append(gxe.ExpectColumnValuesToMatchRegex(column=name, regex=PSEUDONYM_PATTERN))
        if column.consented.name == "mask":
            visible = DEFAULT_MASK_VISIBLE if column.consented.argument is None else column.consented.argument
            consented.append(gxe.ExpectColumnValuesToMatchRegex(column=name, regex=mask_pattern(visible)))
        if column.consented.name == "encrypt":
            consented.append(gxe.ExpectColumnValuesToMatchRegex(column=name, regex=CIPHERTEXT_PATTERN))
        if column.consented.removes_value:
            consented.append(gxe.ExpectColumnValuesToBeNull(column=name))
        if column.anonymized.removes_value:
            anonymized.append(gxe.ExpectColumnValuesToBeNull(column=name))
        # Free-text leaks, per slice and its own rule: a string value the policy neither
        # keeps nor drops must not carry an e-mail address or a phone number
        # (pseudonyms and ciphertexts are checked by their own patterns). Scrubbed text
        # is held to the scrubber's definition of a phone number, which leaves ISO dates.
        if name in string_columns:
            for rule, slice_expectations in ((column.consented, consented), (column.anonymized, anonymized)):
                if rule.name in ("keep", "drop", "pseudonymize", "encrypt"):
                    continue
                slice_expectations.append(gxe.ExpectColumnValuesToNotMatchRegex(column=name, regex=EMAIL_PATTERN))
                patterns = [p for _, p in SCRUB_PATTERNS] if rule.name == "scrub_text" else [PHONE_PATTERN]
                slice_expectations.extend(
                    gxe.ExpectColumnValuesToNotMatchRegex(column=name, regex=pattern) for pattern in patterns
                )

    published_time = policy.event_time in output_columns and policy.event_time not in string_columns
    for state, slice_expectations in (("consented", consented), ("anonymized", anonymized)):
        bounds = event_time_bounds(policy, judged_at, state) if published_time else None
        if bounds is None:
            continue
        # Every published row was judged: it had an event time, before t (and within the
        # retention, unless expired rows are published anonymised).
        slice_expectations.append(gxe.ExpectColumnValuesToNotBeNull(column=policy.event_time))
        slice_expectations.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=policy.event_time,
                # Instants (UTC), not naive datetimes: PySpark reads a naive one in the
                # driver's local zone, which would move both bounds by its offset.
                min_value=bounds[0],
                max_value=bounds[1],
                strict_max=True,
            )
        )
    return [
        SliceExpectations("all", everything),
        SliceExpectations("consented", consented),
        SliceExpectations("anonymized", anonymized),
    ]


# Frames the validate job derives from the staged output and the lake, one per slice.
CONSENT_CROSSCHECK = "consent_crosscheck"  # consented rows whose subject has no valid consent
K_ANONYMITY_GROUPS = "k_anonymity_groups"  # one row per combination of quasi-identifiers
QUARANTINE = "quarantine"  # the quarantined rows the enforce step wrote
RULE_CONFORMANCE = "rule_conformance"  # one row: per rechecked column, its values the rule would change


def event_time_bounds(
    policy: Policy, judged_at: datetime, state: str = "consented"
) -> tuple[datetime | None, datetime] | None:
    """``[earliest, t)`` a ``state`` row's published event time lies in, as its rule
    publishes it (``earliest`` None where rows past the retention may be published in
    that state, or there is no retention); None where the rule leaves no bound (dropped,
    masked, encrypted) or the event time is not published."""
    column = policy.column(policy.event_time)
    if column is None:
        return None
    rule = column.rule_for(state)
    cutoff = None
    expired_published = state == "anonymized" and policy.on_retention_expired is OnRetentionExpired.ANONYMIZE
    if policy.retention_days is not None and not expired_published:
        cutoff = judged_at - timedelta(days=policy.retention_days)
    if rule.name == "keep":
        return cutoff, judged_at
    if rule.name == "generalize" and rule.argument[0] in ("year", "month", "day"):
        if cutoff is None:
            return None, judged_at
        # The period holding the cutoff, which starts at or before it (in UTC, the
        # session's zone, in which the rule truncates).
        start = {
            "year": cutoff.replace(month=1, day=1),
            "month": cutoff.replace(day=1),
            "day": cutoff,
        }[rule.argument[0]]
        return start.replace(hour=0, minute=0, second=0, microsecond=0), judged_at
    if rule.name == "date_shift":
        # Each subject's dates move by at most the rule's days either way.
        shift = timedelta(days=rule.argument)
        return (cutoff - shift if cutoff is not None else None), judged_at + shift
    return None


def rechecked_columns(policy: Policy, output_types: dict[str, DataType]) -> list[tuple[str, str]]:
    """``[(record_state, column)]`` whose values the rule conformance frame re-checks: those
    generalised or redacted, where applying the rule to a published value again changes
    nothing. Not where the published column has a type the rule does not take (a column
    published as text because the other state pseudonymises it), nor a bucket of a
    floating-point column (floor, multiply and cast back can move a large value again)."""
    checked = []
    for column in policy.output_columns:
        dtype = output_types.get(column.name)
        if dtype is None:
            continue
        for state, rule in (("consented", column.consented), ("anonymized", column.anonymized)):
            if rule.name not in ("generalize", "redact") or not rule.fits(dtype):
                continue
            if rule.name == "generalize" and rule.argument[0] == "bucket" and type_family(dtype) in ("float", "double"):
                continue
            checked.append((state, column.name))
    return checked


def conformance_column(state: str, column: str) -> str:
    """The rule conformance frame's column counting ``column``'s non-conforming values in
    ``state`` rows."""
    return f"{state}:{column}"


def derived_suite(
    policy: Policy, totals: dict[str, int], quarantine_written: int | None, output_types: dict[str, DataType]
) -> list[SliceExpectations]:
    """Expectations on frames derived from the output: the independent consent
    cross-check, the rules applied again, k-anonymity among anonymised rows, and the
    quarantine's row count."""
    from expectations.consent_crosscheck import applies_to

    # Left out, not shown as passed, where the output does not name its subjects.
    slices = []
    if applies_to(policy):
        slices.append(SliceExpectations(CONSENT_CROSSCHECK, [gxe.ExpectTableRowCountToEqual(value=0)]))
    rechecked = rechecked_columns(policy, output_types)
    if rechecked:
        slices.append(
            SliceExpectations(
                RULE_CONFORMANCE,
                [
                    gxe.ExpectColumnValuesToBeBetween(column=conformance_column(*pair), min_value=0, max_value=0)
                    for pair in rechecked
                ],
            )
        )
    if policy.quasi_identifiers:
        # Each group holds at least k_min people, so at least k_min rows (vacuous when empty).
        smallest_group = gxe.ExpectColumnValuesToBeBetween(column="rows", min_value=policy.k_min)
        slices.append(SliceExpectations(K_ANONYMITY_GROUPS, [smallest_group]))
    if quarantine_written is not None:
        slices.append(SliceExpectations(QUARANTINE, [gxe.ExpectTableRowCountToEqual(value=quarantine_written)]))
    return slices
