"""Each column rule on tiny hand-written columns, nulls included, with exact outputs."""

from __future__ import annotations

import hashlib
import hmac
import math
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
    assert apply(spark, "generalize:day", days, "date") == days  # a date is its own day
    moments = [datetime(2026, 3, 14, 15, 9, 26), None]
    assert apply(spark, "generalize:month", moments, "timestamp") == [datetime(2026, 3, 1), None]
    assert apply(spark, "generalize:day", moments, "timestamp") == [datetime(2026, 3, 14), None]


def test_generalize_prefix_and_bucket(spark):
    assert apply(spark, "generalize:prefix3", ["12345", "12", None], "string") == ["123", "12", None]
    assert apply(spark, "generalize:bucket10", [37, -7, 40, None], "int") == [30, -10, 40, None]
    assert apply(spark, "generalize:bucket5", [Decimal("12.34"), None], "decimal(10,2)") == [Decimal("10.00"), None]
    # Near a type's least value the bucket would fall outside the type: it is that value.
    assert apply(spark, "generalize:bucket100", [-128, -5, 127], "tinyint") == [-128, -100, 100]
    floats = apply(spark, "generalize:bucket5", [12.5, float("nan"), None], "double")
    assert floats[0] == 10.0 and math.isnan(floats[1]) and floats[2] is None  # NaN is not a zero


def test_rules_declare_the_types_they_fit(spark):
    from pyspark.sql.types import DateType, IntegerType, StringType

    assert not parse_rule("mask").fits(DateType())
    assert not parse_rule("generalize:year").fits(StringType())
    assert not parse_rule("generalize:bucket10").fits(StringType())
    assert parse_rule("generalize:bucket10").fits(IntegerType())


def test_mask_keeps_the_declared_number_of_characters(spark):
    values = ["+1-555-555-0100", "ab", "", None]
    assert apply(spark, "mask:2", values, "string") == ["*************00", "ab", "", None]
    assert apply(spark, "mask:0", values, "string") == ["***************", "**", "", None]


def test_redact_replaces_every_value_with_one_token(spark):
    assert apply(spark, "redact", ["Ann Lee", "", None], "string") == ["[REDACTED]", "[REDACTED]", None]


def test_scrub_text_replaces_emails_phones_and_card_numbers_inside_text(spark):
    values = [
        "Call +44 20 7946 0958 or (555) 123-4567 x204 about order 12345 of 2026-11-29.",
        "Mail ann.lee+shop@mail.example.co.uk; card 4111 1111 1111 1111, Amex 3782 822463 10005.",
        "Paid with 4111111111111111 on 06 56 31 70 66; total 1234.56, 3 items.",
        "nothing personal here",
        None,
        # Pasted from documents: no-break spaces and Unicode dashes, slashes, " - ",
        # an extension in capitals, full-width digits, addresses in other scripts.
        "call +49\u00a030\u00a0123\u00a04567 or 030/1234567 or 555 - 123 - 4567 Ext. 89",
        "card 4111\u00a01111\u20111111\u00a01111; tel \uff10\uff13\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17",
        "o'brien@example.com, jörg.müller@example.de, user@bücher.de and a@b.xn--p1ai wrote",
    ]
    assert apply(spark, "scrub_text", values, "string") == [
        "Call [phone] or [phone] about order 12345 of 2026-11-29.",
        "Mail [email]; card [card], Amex [card].",
        "Paid with [card] on [phone]; total 1234.56, 3 items.",
        "nothing personal here",
        None,
        "call [phone] or [phone] or [phone]",
        "card [card]; tel [phone]",
        "[email], [email], [email] and [email] wrote",
    ]


def shifted(spark, rows, rule="date_shift:30", ddl="timestamp"):
    """Applies date_shift to (subject, value) rows; returns (subject, before, after)."""
    from transforms.keys import SecretKey

    key = SecretKey(b"date-shift-test-key-0123", "1", "test")
    shifter = Pseudonymizer(spark, key.derive("date shift"), tag="shift")
    df = shifter.attach(spark.createDataFrame(rows, f"subject string, v {ddl}"))
    context = RuleContext(date_shifter=shifter, subject=F.col("subject"))
    dtype = df.schema["v"].dataType
    out = df.select("subject", "v", parse_rule(rule).apply(F.col("v"), dtype, context).alias("out"))
    return [(r.subject, r.v, r.out) for r in out.collect()]


def test_date_shift_moves_all_of_a_subjects_dates_by_one_offset(spark):
    base = datetime(2026, 6, 1, 12, 0)
    rows = [(f"C{n % 40:04d}", base.replace(day=1 + n % 28, hour=n % 24)) for n in range(400)] + [("C0001", None)]
    result = shifted(spark, rows)
    offsets: dict[str, set] = {}
    for subject, before, after in result:
        if before is None:
            assert after is None
            continue
        offsets.setdefault(subject, set()).add(after - before)
    # One offset per subject (intervals between a subject's events survive), whole days,
    # within the declared bound, and not the same offset for everyone.
    assert all(len(deltas) == 1 for deltas in offsets.values())
    deltas = [next(iter(d)) for d in offsets.values()]
    assert all(d.seconds == 0 and -30 <= d.days <= 30 for d in deltas)
    assert len(set(deltas)) > 10
    # Each offset exactly as documented, computed here with Python's hmac: the first 12
    # hex digits of HMAC-SHA256(derived key, subject), modulo 61, minus 30.
    derived = hmac.new(b"date-shift-test-key-0123", b"\xffconsentgate derived key: date shift", hashlib.sha256).digest()
    expected = {
        subject: int(hmac.new(derived, subject.encode(), hashlib.sha256).hexdigest()[:12], 16) % 61 - 30
        for subject in offsets
    }
    assert {subject: next(iter(d)).days for subject, d in offsets.items()} == expected


def test_date_shift_on_dates_matches_the_timestamp_offset(spark):
    moments = shifted(spark, [("C1", datetime(2026, 6, 1, 0, 0)), ("C2", datetime(2026, 6, 1, 0, 0))])
    days = shifted(spark, [("C1", date(2026, 6, 1)), ("C2", date(2026, 6, 1))], ddl="date")
    assert [(m[2] - m[1]).days for m in moments] == [(d[2] - d[1]).days for d in days]


def test_encrypt_is_aes_gcm_that_python_can_open_and_only_in_its_own_column(spark):
    import base64

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from transforms.encryption import Encryptor
    from transforms.keys import SecretKey

    material = bytes(range(32))
    encryptor = Encryptor(spark, SecretKey(material, "1", "test"))
    values = ["ann@example.com", "", "Zoë 😀", "ann@example.com", None, "a long value, " * 20]
    df = encryptor.attach(spark.createDataFrame([(v,) for v in values], "v string"))
    context = RuleContext(encryptor=encryptor, column_name="email")
    sealed = df.select("*", parse_rule("encrypt").apply(F.col("v"), df.schema["v"].dataType, context).alias("c"))
    rows = sealed.select(
        "v",
        "c",
        Encryptor.decrypt(F.col("c"), "email").alias("back"),
        Encryptor.decrypt(F.col("c"), "phone").alias("elsewhere"),
    ).collect()
    assert [r.back for r in rows] == values
    assert [r.elsewhere for r in rows] == [None] * 6
    assert rows[0].c == rows[3].c  # deterministic: reruns publish the same bytes
    other_column = context.for_column("phone")
    in_phone = df.select(parse_rule("encrypt").apply(F.col("v"), df.schema["v"].dataType, other_column).alias("c"))
    assert in_phone.collect()[0].c[:16] != rows[0].c[:16]  # another column, another nonce
    assert rows[4].c is None
    for row in rows[:4] + rows[5:]:
        assert "\n" not in row.c
        blob = base64.b64decode(row.c)
        assert AESGCM(material).decrypt(blob[:12], blob[12:], b"email").decode() == row.v
        assert row.v == "" or row.v not in row.c


def test_unknown_rules_and_bad_arguments_are_refused():
    from transforms.rules import RuleSyntaxError

    for text, message in [
        ("hash", "unknown rule 'hash'"),
        ("mask:x", "not a number"),
        ("date_shift", "largest shift"),
        ("date_shift:0", "largest shift"),
        ("redact:x", "takes no argument"),
        ("encrypt:aes", "takes no argument"),
        # Typos past any sensible size (a bucket past a long's range broke the run).
        ("mask:1000001", "not a number of characters .0 to 100000."),
        ("generalize:prefix100001", "prefix at most 100000"),
        ("generalize:bucket99999999999999999999", "bucket at most 1000000000000000000"),
    ]:
        with pytest.raises(RuleSyntaxError, match=message):
            parse_rule(text)


def test_new_rules_declare_the_types_they_fit():
    from pyspark.sql.types import ArrayType, DateType, LongType, StringType, StructType, TimestampType

    assert parse_rule("date_shift:10").fits(DateType()) and parse_rule("date_shift:10").fits(TimestampType())
    assert not parse_rule("date_shift:10").fits(StringType())
    assert parse_rule("encrypt").fits(LongType()) and not parse_rule("encrypt").fits(DateType())
    assert not parse_rule("scrub_text").fits(LongType()) and not parse_rule("redact").fits(DateType())
    nested = [StructType(), ArrayType(StringType())]
    assert all(parse_rule("keep").fits(t) and parse_rule("drop").fits(t) for t in nested)
    assert not any(parse_rule(r).fits(t) for r in ("pseudonymize", "mask", "encrypt", "redact") for t in nested)
