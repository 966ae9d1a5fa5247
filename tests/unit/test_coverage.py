"""Consent coverage on a hand-written consent log: per purpose, how many of the run's
subjects have valid consent at t, and why the others do not."""

from __future__ import annotations

from datetime import timedelta

from pyspark.sql import functions as F

from tests.conftest import CONSENT_DDL, ORDERS_POLICY, SOURCE_DDL, T
from transforms.consent import SUBJECT
from transforms.coverage import UNLISTED, consent_coverage
from transforms.policy import load_policy
from transforms.subjects import normalize_subject

DAY = timedelta(days=1)
EVENTS = [
    ("a", "analytics", "granted", T - 9 * DAY, None, "web_form"),
    ("a", "marketing", "granted", T - 9 * DAY, None, "web_form"),
    ("a", "marketing", "withdrawn", T - 2 * DAY, None, "app"),
    ("b", "analytics", "granted", T - 9 * DAY, T - DAY, "web_form"),  # expired before t
    ("c", "analytics", "denied", T - 9 * DAY, None, "gpc"),
    ("d", "analytics", "granted", T + DAY, None, "web_form"),  # after t: not yet
    (" a\u00a0", "share:acme", "granted", T - 3 * DAY, None, "support"),  # the same subject as "a"
    ("b", "someone@example.com", "granted", T - 3 * DAY, None, "web_form"),  # not a purpose name
    ("z", "analytics", "granted", T - 9 * DAY, None, "web_form"),  # not in the run's input
    # The run's purpose written otherwise, counted as the judgement counts it: a
    # withdrawal withdraws, a grant does not grant.
    ("d", "Analytics ", "withdrawn", T - 2 * DAY, None, "app"),
    ("e", "ANALYTICS", "granted", T - 2 * DAY, None, "app"),
]
ORDERS = [("o1", "a", T - DAY), ("o2", "a", T - DAY), ("o3", "b", T - DAY), ("o4", "c", None), ("o5", "d", T - DAY)]
ORDERS += [("o6", "e", T - DAY), ("o7", None, T - DAY)]


def coverage_of(spark):
    policy = load_policy(ORDERS_POLICY)
    orders = spark.createDataFrame(ORDERS, SOURCE_DDL)
    judged = orders.withColumn(SUBJECT, normalize_subject(F.col("customer_id")))
    consent = spark.createDataFrame(EVENTS, CONSENT_DDL)
    return consent_coverage(judged, consent, policy, T)


def test_purposes_of_few_subjects_are_counted_without_their_names(spark):
    # Marketing and share:acme have one subject each here: below the threshold for a name.
    assert coverage_of(spark)["purposes"] == {
        UNLISTED: {"consented": 2, "withdrawn": 1, "expired": 0, "refused": 0, "no_event": 0},
        "analytics": {"consented": 1, "withdrawn": 1, "expired": 1, "refused": 2, "no_event": 0},
    }


def test_coverage_counts_each_subject_once_per_purpose(spark, monkeypatch):
    monkeypatch.setattr("transforms.coverage.MIN_SUBJECTS_TO_NAME", 1)
    coverage = coverage_of(spark)
    assert coverage == {
        "purpose": "analytics",
        "subjects": 5,  # a, b, c, d, e; the order without a subject is not one
        "purposes": {
            UNLISTED: {"consented": 1, "withdrawn": 0, "expired": 0, "refused": 0, "no_event": 0},
            "analytics": {"consented": 1, "withdrawn": 1, "expired": 1, "refused": 2, "no_event": 0},
            "marketing": {"consented": 0, "withdrawn": 1, "expired": 0, "refused": 0, "no_event": 4},
            "share:acme": {"consented": 1, "withdrawn": 0, "expired": 0, "refused": 0, "no_event": 4},
        },
    }
