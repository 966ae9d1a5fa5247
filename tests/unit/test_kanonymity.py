"""k-anonymity among anonymised rows: exact suppressions on hand-written rows."""

from __future__ import annotations

from datetime import date

from pyspark.sql import functions as F

from transforms.consent import SUBJECT
from transforms.kanonymity import quasi_identifier_values, suppress_small_groups
from transforms.policy import parse_policy
from transforms.reasons import ACTION, REASON
from transforms.rules import RuleContext

POLICY = {
    "dataset": "people",
    "source": "raw/people",
    "subject_key": "id",
    "event_time": "seen",
    "purpose": "analytics",
    "quasi_identifiers": ["zip", "born"],
    "k_min": 3,
    "columns": {
        "id": {"consented": "keep", "anonymized": "drop"},
        "zip": {"consented": "keep", "anonymized": "generalize:prefix2"},
        "born": {"consented": "keep", "anonymized": "generalize:year"},
    },
}


def test_anonymised_rows_in_groups_smaller_than_k_are_suppressed(spark):
    policy = parse_policy(POLICY, "people.yml")
    rows = [
        # zip prefix 12, born 1980: three anonymised rows -> published
        ("a1", "12345", date(1980, 1, 5), "no_consent", "anonymized"),
        ("a2", "12999", date(1980, 7, 1), "withdrawn", "anonymized"),
        ("a3", "12000", date(1980, 12, 31), "no_consent", "anonymized"),
        # zip prefix 12, born 1981: two anonymised rows (a kept row does not count) -> suppressed
        ("b1", "12345", date(1981, 2, 2), "no_consent", "anonymized"),
        ("b2", "12345", date(1981, 3, 3), "consent_expired", "anonymized"),
        ("b3", "12345", date(1981, 3, 3), "consented", "kept"),
        # null zip, born 1990: three rows, nulls form one group -> published
        ("c1", None, date(1990, 1, 1), "no_consent", "anonymized"),
        ("c2", None, date(1990, 5, 1), "no_consent", "anonymized"),
        ("c3", None, date(1990, 9, 1), "no_consent", "anonymized"),
        # alone -> suppressed; a dropped row is never re-judged
        ("d1", "99999", date(2000, 1, 1), "no_consent", "anonymized"),
        ("e1", "99999", date(2000, 1, 1), "retention_expired", "dropped"),
        # one person's three rows are one person, not three -> suppressed
        ("f1", "55555", date(1970, 1, 1), "no_consent", "anonymized"),
        ("f1", "55500", date(1970, 2, 1), "no_consent", "anonymized"),
        ("f1", "55511", date(1970, 3, 1), "no_consent", "anonymized"),
    ]
    judged = spark.createDataFrame(
        rows, f"id string, zip string, born date, {REASON} string, {ACTION} string"
    ).withColumn(SUBJECT, F.col("id"))
    with_values = quasi_identifier_values(judged, policy, RuleContext(), {})
    # Every row, one person's three rows each (a dict by id would keep only one of them).
    result = sorted((r.id, r[REASON], r[ACTION]) for r in suppress_small_groups(with_values, policy).collect())
    suppressed = ("k_anonymity_suppressed", "dropped")
    assert result == [
        ("a1", "no_consent", "anonymized"),
        ("a2", "withdrawn", "anonymized"),
        ("a3", "no_consent", "anonymized"),
        ("b1", *suppressed),
        ("b2", *suppressed),
        ("b3", "consented", "kept"),
        ("c1", "no_consent", "anonymized"),
        ("c2", "no_consent", "anonymized"),
        ("c3", "no_consent", "anonymized"),
        ("d1", *suppressed),
        ("e1", "retention_expired", "dropped"),
        ("f1", *suppressed),
        ("f1", *suppressed),
        ("f1", *suppressed),
    ]
    assert set(suppress_small_groups(with_values, policy).columns) == set(judged.columns)
    assert suppress_small_groups(with_values, policy).filter(F.col(REASON).isNull()).count() == 0
