"""Each column rule on tiny hand-written columns, nulls included, with exact outputs."""

from __future__ import annotations

import hashlib
import hmac
from datetime import date, datetime
from decimal import Decimal

import pytest
from pyspark.sql import functions as F

from transforms.keys import SecretKey
from transforms.pseudonym import Pseudonymizer
from transforms.rules import RuleContext, parse_rule


def apply(spark, rule_text, values, ddl, key=None):
    df = spark.createDataFrame([(v,) for v in values], f"v {ddl}")
    context = RuleContext()
    if key is not None:
        context = RuleContext(Pseudonymizer(spark, SecretKey(key, "1", "test")))
        df = context.pseudonymizer.attach(df)
    rule = parse_rule(rule_text)
    assert rule.fits(df.schema["v"].dataType)
    out = df.select(rule.apply(F.col("v"), df.schema["v"].dataType, context).alias("out"))
    return [row.out for row in out.collect()]


def test_keep_and_drop(spark):
    assert apply(spark, "keep", ["a", None], "string") == ["a", None]
    assert apply(spark, "drop", ["a", None], "string") == [None, None]


@pytest.mark.parametrize("key", [b"a-key-of-16bytes", b"k" * 64, b"a-much-longer-key-" * 8])
def test_pseudonymize_is_rfc2104_hmac_sha256_hex(spark, key):
    values = ["C0000001", "", "Zoë 😀", "x" * 1000, None]
    expected = [None if v is None else hmac.new(key, v.encode("utf-8"), hashlib.sha256).hexdigest() for v in values]
    assert apply(spark, "pseudonymize", values, "string", key=key) == expected


def test_mask_keeps_last_four_characters(spark):
    values = ["+1-555-555-0100", "0100", "12", "", None]
    assert apply(spark, "mask", values, "string") == ["***********0100", "0100", "12", "", None]


def test_generalize_periods_keep_the_type(spark):
    days = [date(1980, 5, 17), None]
    assert apply(spark, "generalize:year", days, "date") == [date(1980, 1, 1), None]
    assert apply(spark, "generalize:month", days, "date") == [date(1980, 5, 1), None]
    moments = [datetime(2026, 3, 14, 15, 9, 26), None]
    assert apply(spark, "generalize:month", moments, "timestamp") == [datetime(2026, 3, 1), None]
    assert apply(spark, "generalize:day", moments, "timestamp") == [datetime(2026, 3, 14), None]


def test_generalize_prefix_and_bucket(spark):
    assert apply(spark, "generalize:prefix3", ["12345", "12", None], "string") == ["123", "12", None]
    assert apply(spark, "generalize:bucket10", [37, -7, 40, None], "int") == [30, -10, 40, None]
    assert apply(spark, "generalize:bucket5", [Decimal("12.34"), None], "decimal(10,2)") == [Decimal("10.00"), None]


def test_rules_declare_the_types_they_fit(spark):
    from pyspark.sql.types import DateType, IntegerType, StringType

    assert not parse_rule("mask").fits(DateType())
    assert not parse_rule("generalize:year").fits(StringType())
    assert not parse_rule("generalize:bucket10").fits(StringType())
    assert parse_rule("generalize:bucket10").fits(IntegerType())
