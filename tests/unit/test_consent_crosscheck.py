"""The validation's independent consent cross-check agrees with the reference model on
hand-written histories, and its pseudonyms are Python's hmac."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

from expectations.consent_crosscheck import unconsented_published, valid_subjects
from tests import reference
from tests.conftest import CONSENT_DDL, ORDERS_POLICY, T
from transforms.policy import load_policy

DAY = timedelta(days=1)
HISTORIES = {
    "granted": [("granted", T - 9 * DAY, None)],
    "withdrawn-later": [("granted", T - 9 * DAY, None), ("withdrawn", T - 2 * DAY, None)],
    "tie-refusal-wins": [("granted", T - 3 * DAY, None), ("denied", T - 3 * DAY, None)],
    "expired": [("granted", T - 9 * DAY, T - DAY)],
    "expires-exactly-at-t": [("granted", T - 9 * DAY, T)],
    "tie-earlier-expiry-wins": [("granted", T - 3 * DAY, None), ("granted", T - 3 * DAY, T - DAY)],
    "regranted": [("withdrawn", T - 9 * DAY, None), ("granted", T - DAY, T + 9 * DAY)],
    "untimed-refusal": [("granted", T - 9 * DAY, None), ("withdrawn", None, None)],
    "unknown-status": [("granted", T - 9 * DAY, None), ("maybe", T - DAY, None)],
    "faulty-grant": [("granted", T - 2 * DAY, T - 3 * DAY)],
    "after-t-only": [("granted", T + DAY, None)],
    "after-t-refusal": [("granted", T - DAY, None), ("withdrawn", T + DAY, None)],
    "null-status-tie": [("granted", T - DAY, None), (None, T - DAY, None)],
}


def test_valid_subjects_match_the_reference_model(spark):
    policy = load_policy(ORDERS_POLICY)
    rows = [
        (subject, purpose, status, at, expires, "web")
        for subject, events in HISTORIES.items()
        for purpose in ("analytics", "marketing")
        for status, at, expires in events
        if purpose == "analytics" or subject == "granted"
    ] + [
        ("marketing-only", "marketing", "granted", T - 9 * DAY, None, "web"),
        # The purpose written otherwise: its withdrawal counts, its grant does not.
        ("mistyped-withdrawal", "analytics", "granted", T - 9 * DAY, None, "web"),
        ("mistyped-withdrawal", "Analytics ", "withdrawn", T - DAY, None, "web"),
        ("mistyped-grant", "ANALYTICS", "granted", T - DAY, None, "web"),
    ]
    consent = spark.createDataFrame(rows, CONSENT_DDL)
    got = {row.subject for row in valid_subjects(consent, policy, T).collect()}
    events = [reference.Event(s, p, st, at, ex) for s, p, st, at, ex, _ in rows]
    expected = {
        subject
        for subject in [*HISTORIES, "marketing-only", "mistyped-withdrawal", "mistyped-grant"]
        if reference.reason_for(subject, T - DAY, T, [e for e in events if e.subject == subject], [], "analytics", None)
        == "consented"
    }
    assert got == expected == {"granted", "regranted", "after-t-refusal"}


def test_published_rows_without_valid_consent_are_found(spark):
    policy = load_policy(ORDERS_POLICY)
    key = b"crosscheck-test-key-01"
    consent = spark.createDataFrame([("C1", "analytics", "granted", T - DAY, None, "web")], CONSENT_DDL)
    pseudonym = {s: hmac.new(key, s.encode(), hashlib.sha256).hexdigest() for s in ("C1", "C2")}
    published = spark.createDataFrame(
        [(pseudonym["C1"],), (pseudonym["C2"],), (pseudonym["C2"],)], "customer_id string"
    )
    assert unconsented_published(spark, published, consent, policy, T, key).count() == 2


def test_an_export_is_checked_in_its_recipients_pseudonyms(spark):
    from transforms.keys import SecretKey, recipient_key

    policy = load_policy(ORDERS_POLICY.with_name("orders_to_acme_ads.yml"))
    key = SecretKey(material=b"crosscheck-test-key-01", version="1", source="test")
    outer = recipient_key(key, "acme_ads").material
    consent = spark.createDataFrame(
        [
            ("C1", "share:acme_ads", "granted", T - DAY, None, "web"),
            ("C2", "analytics", "granted", T - DAY, None, "web"),
        ],
        CONSENT_DDL,
    )

    def ours(subject: str) -> str:
        return hmac.new(key.material, subject.encode(), hashlib.sha256).hexdigest()

    def theirs(subject: str) -> str:
        return hmac.new(outer, ours(subject).encode(), hashlib.sha256).hexdigest()

    # C2 consented to analytics only; C1's row with our own pseudonym is not an export's.
    published = spark.createDataFrame([(theirs("C1"),), (theirs("C2"),), (ours("C1"),)], "customer_id string")
    unconsented = unconsented_published(spark, published, consent, policy, T, key.material, outer)
    assert unconsented.count() == 2
    only_c1 = spark.createDataFrame([(theirs("C1"),)], "customer_id string")
    assert unconsented_published(spark, only_c1, consent, policy, T, key.material, outer).count() == 0


def test_a_published_subject_erased_with_the_run_s_key_is_found_whatever_its_consent(spark):
    """The tombstones hold our pseudonyms: an erased customer who still has valid consent
    must not be published (an enforce step that missed the tombstone would)."""
    policy = load_policy(ORDERS_POLICY)
    key = b"crosscheck-test-key-01"
    pseudonym = {s: hmac.new(key, s.encode(), hashlib.sha256).hexdigest() for s in ("C1", "C3")}
    consent = spark.createDataFrame(
        [(s, "analytics", "granted", T - DAY, None, "web") for s in ("C1", "C3")], CONSENT_DDL
    )
    published = spark.createDataFrame([(pseudonym["C1"],), (pseudonym["C3"],)], "customer_id string")
    erased = spark.createDataFrame([(pseudonym["C3"],)], "_cg_subject_hash string")
    assert unconsented_published(spark, published, consent, policy, T, key).count() == 0
    assert unconsented_published(spark, published, consent, policy, T, key, erased=erased).count() == 1
    only_c1 = published.filter(published.customer_id == pseudonym["C1"])
    assert unconsented_published(spark, only_c1, consent, policy, T, key, erased=erased).count() == 0
