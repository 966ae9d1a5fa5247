"""Subject keys normalise as the contract says (trim Unicode white space, NFC, optional
lower case) on both of normalize_subject's paths (ASCII keys and the others), with
generated code (production) and interpreted (the test session's default)."""

from __future__ import annotations

import random

import pytest
from pyspark.sql import functions as F

from tests.reference import normalize
from tests.unit.test_hmac_vectors import random_strings
from transforms.subjects import normalize_subject, starts_like_a_key

ASCII_EDGES = ["\t", "\n", "\x0b", "\x0c", "\r", " ", "\x1c", "\x1f", "\x00", "A"]


def ascii_strings(count: int, seed: int = 20261129) -> list[str]:
    rng = random.Random(seed)
    return [
        "".join(rng.choice(ASCII_EDGES) for _ in range(rng.randint(0, 3)))
        + "".join(rng.choice("aZ0 .\t") for _ in range(rng.randint(0, 6)))
        + "".join(rng.choice(ASCII_EDGES) for _ in range(rng.randint(0, 3)))
        for _ in range(count)
    ]


@pytest.fixture(params=["CODEGEN_ONLY", "NO_CODEGEN"])
def codegen(spark, request):
    saved = spark.conf.get("spark.sql.codegen.factoryMode")
    spark.conf.set("spark.sql.codegen.factoryMode", request.param)
    yield request.param
    spark.conf.set("spark.sql.codegen.factoryMode", saved)


def test_normalised_keys_equal_the_reference_on_ascii_and_unicode_strings(spark, codegen):
    strings = [None, "", "   ", "Cafe\u0301", "\u00a0Caf\u00e9\u3000", *ascii_strings(2_000), *random_strings(2_000)]
    df = spark.createDataFrame(list(enumerate(strings)), "i int, v string")
    rows = df.select(
        "i", normalize_subject(F.col("v")).alias("plain"), normalize_subject(F.col("v"), ["lower"]).alias("lower")
    ).collect()
    assert len(rows) == len(strings)
    wrong = [
        row.i
        for row in rows
        if (row.plain, row.lower) != (normalize(strings[row.i]), normalize(strings[row.i], lower=True))
    ]
    assert wrong == []


def test_a_key_that_is_not_valid_utf8_takes_the_repairing_path(spark, codegen):
    # Latin-1 "cafe" with an acute e: as many bytes as Spark counts characters, yet not ASCII.
    latin1 = spark.range(1).select(F.unhex(F.lit("20636166E920")).cast("string").alias("v"))
    [row] = latin1.select(normalize_subject(F.col("v")).alias("key")).collect()
    assert row.key == "caf\ufffd"


def test_a_key_that_starts_like_one_never_normalises_to_nothing(spark, codegen):
    # Only keys not starting with a printable ASCII character are normalised in the passes
    # that look for missing keys: every key that normalises to nothing must be among them.
    blank = ["", " ", "\u00a0", "\u3000\t", "\u2028", "\u0085 "]
    kept = ["!", "~x", "\x7f", "\x00", "\x1c\x1f", " a", "\u00a0b", "\u00e9", "Cafe\u0301"]
    strings = [None, *blank, *kept, *ascii_strings(2_000), *random_strings(2_000)]
    texts = spark.createDataFrame(list(enumerate(strings)), "i int, v string")
    # Keys that are not valid UTF-8 (an ASCII letter then a Latin-1 byte, and the other
    # way round), and a key that is a number, as the job casts it.
    raw = spark.createDataFrame([(-1, "41E9"), (-2, "E941")], "i int, hex string")
    keys = texts.unionByName(raw.select("i", F.unhex("hex").cast("string").alias("v")))
    keys = keys.unionByName(spark.range(1).select(F.lit(-3).alias("i"), F.lit(42).cast("string").alias("v")))
    rows = keys.select(
        "i",
        starts_like_a_key(F.col("v")).alias("vouched"),
        normalize_subject(F.col("v")).isNull().alias("blank"),
        normalize_subject(F.col("v"), ["lower"]).isNull().alias("blank_lower"),
    ).collect()
    assert len(rows) == len(strings) + 3
    wrong = [row.i for row in rows if row.vouched and (row.blank or row.blank_lower)]
    assert wrong == []
    by_index = {row.i: row for row in rows}
    vouched = [strings[i] for i in range(1 + len(blank) + len(kept)) if by_index[i].vouched]
    assert vouched == ["!", "~x", "Cafe\u0301"]
    assert [by_index[i].vouched for i in (-1, -2, -3)] == [True, False, True]
    # The reference agrees with Spark on which keys are blank.
    assert [i for i, v in enumerate(strings) if by_index[i].blank is not (normalize(v) is None)] == []
