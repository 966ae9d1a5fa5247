"""The published shape: declared columns only, each through its state's rule."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, date, datetime
from decimal import Decimal

from pyspark.sql import functions as F

from tests.conftest import ORDERS_POLICY
from transforms.consent import SUBJECT
from transforms.enforce import ACTION, with_column_rules
from transforms.keys import SecretKey
from transforms.policy import load_policy
from transforms.pseudonym import Pseudonymizer
from transforms.rules import RuleContext

KEY = b"unit-test-key-0123456789"
OUTPUT_COLUMNS = [
    "order_id", "customer_id", "email", "phone", "birth_date", "zip_code", "ordered_at",
    "channel", "product_category", "amount", "record_state", "ordered_at_month",
]  # fmt: skip
UTC = UTC
SOURCE_COLUMNS = (
    "order_id string, customer_id string, email string, phone string, full_name string, birth_date date, "
    "zip_code string, street_address string, ordered_at timestamp, channel string, product_category string, "
    "quantity int, amount decimal(10,2)"
)
ANN_ORDER = ("o1", " C1 ", "ann@example.com", "+1-555-555-0100", "Ann Lee", date(1980, 5, 17), "12345", "1 Main St",
             datetime(2026, 10, 17, 8, 30, tzinfo=UTC), "web", "books", 1, Decimal("10.50"))  # fmt: skip


def h(value: str) -> str:
    return hmac.new(KEY, value.encode(), hashlib.sha256).hexdigest()


def test_consented_and_anonymised_rows_get_their_own_rules(spark):
    policy = load_policy(ORDERS_POLICY)
    ddl = f"{SOURCE_COLUMNS}, _cg_subject string, _cg_action string"
    at = datetime(2026, 10, 17, 8, 30, tzinfo=UTC)
    rows = [
        (
            *ANN_ORDER,
            "C1",
            "kept",
        ),
        (
            "o2",
            "C2",
            "bob@example.com",
            "+1-555-555-0101",
            "Bob Roe",
            date(1990, 2, 1),
            "54321",
            "2 Side St",
            at,
            "app",
            "games",
            2,
            Decimal("11.00"),
            "C2",
            "anonymized",
        ),
        ("o3", "C3", None, None, None, None, None, None, at, None, None, None, None, "C3", "kept"),
    ]
    judged = spark.createDataFrame(rows, ddl)
    pseudonymizer = Pseudonymizer(spark, SecretKey(KEY, "1", "test"))
    out = with_column_rules(pseudonymizer.attach(judged), policy, RuleContext(pseudonymizer))
    assert out.columns == OUTPUT_COLUMNS  # full_name dropped everywhere; street_address and quantity never declared
    got = sorted(tuple(r) for r in out.collect())
    naive = datetime(2026, 10, 17, 8, 30)
    assert got == [
        (
            "o1",
            h("C1"),
            h("ann@example.com"),
            "***********0100",
            date(1980, 1, 1),
            "12345",
            naive,
            "web",
            "books",
            Decimal("10.50"),
            "consented",
            date(2026, 10, 1),  # the partition: the month, as the anonymised rows publish it
        ),
        (
            "o2",
            None,
            None,
            None,
            None,
            "543",
            datetime(2026, 10, 1),
            "app",
            "games",
            Decimal("11.00"),
            "anonymized",
            date(2026, 10, 1),
        ),
        ("o3", h("C3"), None, None, None, None, naive, None, None, None, "consented", date(2026, 10, 1)),
    ]


def test_subject_key_is_pseudonymised_in_its_normalised_form(spark):
    policy = load_policy(ORDERS_POLICY)
    judged = spark.createDataFrame([(" C1 ", "C1", "kept")], f"customer_id string, {SUBJECT} string, {ACTION} string")
    for name in (c for c in OUTPUT_COLUMNS if c not in ("customer_id", "record_state", "ordered_at_month")):
        judged = judged.withColumn(name, F.lit(None).cast("string"))
    judged = (
        judged.withColumn("birth_date", F.lit(None).cast("date"))
        .withColumn("ordered_at", F.lit(None).cast("timestamp"))
        .withColumn("amount", F.lit(None).cast("decimal(10,2)"))
    )
    pseudonymizer = Pseudonymizer(spark, SecretKey(KEY, "1", "test"))
    out = with_column_rules(pseudonymizer.attach(judged), policy, RuleContext(pseudonymizer))
    assert [r.customer_id for r in out.collect()] == [h("C1")]


def test_pseudonymised_integer_column_publishes_text(spark):
    from dataclasses import replace

    from transforms.policy import ColumnPolicy
    from transforms.rules import parse_rule

    policy = load_policy(ORDERS_POLICY)
    loyalty = ColumnPolicy("loyalty_id", parse_rule("pseudonymize"), parse_rule("drop"))
    policy = replace(policy, columns=(policy.column("order_id"), loyalty), partition_by=None)
    judged = spark.createDataFrame(
        [("o1", 4711, "kept"), ("o2", 4712, "anonymized")], f"order_id string, loyalty_id bigint, {ACTION} string"
    )
    pseudonymizer = Pseudonymizer(spark, SecretKey(KEY, "1", "test"))
    out = with_column_rules(pseudonymizer.attach(judged), policy, RuleContext(pseudonymizer))
    assert sorted(tuple(r) for r in out.collect()) == [("o1", h("4711"), "consented"), ("o2", None, "anonymized")]


def test_key_material_joins_the_rows_only_after_the_judgement_s_joins(spark):
    """Rows carrying the pads through a join or grouping would write key material to
    Spark's local shuffle files: the judgement hands rows on without them, and the column
    rules attach them just before they are used."""
    from transforms.enforce import judge, rule_context
    from transforms.keys import RunKeys

    policy = load_policy(ORDERS_POLICY)
    source = spark.createDataFrame([ANN_ORDER], SOURCE_COLUMNS)
    consent = spark.createDataFrame(
        [("C1", "analytics", "granted", datetime(2026, 1, 1, tzinfo=UTC), None, "web_form")],
        "subject_id string, purpose string, status string, recorded_at timestamp, expires_at timestamp, source string",
    )
    erased = spark.createDataFrame([], "_cg_subject_hash string")
    key = SecretKey(KEY, "1", "test")
    pseudonymizer = Pseudonymizer(spark, key)
    judged = judge(source, consent, erased, policy, date(2026, 11, 28), pseudonymizer)
    assert [c for c in judged.columns if c.endswith("pad")] == []
    context = rule_context(spark, policy, RunKeys(hmac=key), pseudonymizer)
    [row] = with_column_rules(judged, policy, context).collect()
    assert (row["record_state"], row["customer_id"], row["email"]) == ("consented", h("C1"), h("ann@example.com"))
