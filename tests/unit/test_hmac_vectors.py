"""The Spark HMAC equals Python's hmac on 10,000 random strings, for keys shorter than,
equal to and longer than SHA-256's 64-byte block."""

from __future__ import annotations

import hashlib
import hmac
import random

from pyspark.sql import functions as F

from transforms.keys import SecretKey
from transforms.pseudonym import Pseudonymizer

KEYS = {
    "short": b"sixteen-byte-key",
    "block": bytes(range(64)),
    "long": bytes(range(65)),
    "very_long": b"a long key made of many words " * 20,
}
ALPHABETS = [
    "abcdefghijklmnopqrstuvwxyz0123456789",
    "ÀÉÎÕÜçñßøåæœ",
    "абвгдежзийклмнопрстуфхцчшщ",
    "中文字符日本語한국어",
    "😀🎉👩‍💻🇪🇺",  # astral-plane characters and joiners
    " \t\n\u00a0\u200b\u0301",  # white space, no-break space, zero width, combining accent
]


def random_strings(count: int, seed: int = 20261129) -> list[str]:
    rng = random.Random(seed)
    strings = ["", " ", "\u0000", "x" * 100_000]
    while len(strings) < count:
        length = rng.choice([0, 1, 2, 5, 16, 55, 56, 64, 119, 120, 300, rng.randint(0, 2_000)])
        alphabet = "".join(rng.sample(ALPHABETS, rng.randint(1, len(ALPHABETS))))
        strings.append("".join(rng.choice(alphabet) for _ in range(length)))
    return strings


def test_spark_hmac_matches_python_hmac_on_ten_thousand_strings(spark):
    strings = random_strings(10_000)
    pseudonymizers = {name: Pseudonymizer(spark, SecretKey(key, "1", "test"), tag=name) for name, key in KEYS.items()}
    df = spark.createDataFrame(list(enumerate(strings)), "i int, v string")
    for pseudonymizer in pseudonymizers.values():
        df = pseudonymizer.attach(df)
    hashed = df.select("i", *[p.hmac_hex(F.col("v")).alias(name) for name, p in pseudonymizers.items()])
    rows = sorted(hashed.collect(), key=lambda row: row.i)
    assert len(rows) == len(strings) == 10_000
    mismatches = {
        name: sum(
            row[name] != hmac.new(key, strings[row.i].encode("utf-8"), hashlib.sha256).hexdigest() for row in rows
        )
        for name, key in KEYS.items()
    }
    assert mismatches == dict.fromkeys(KEYS, 0)


def test_the_key_appears_in_no_query_plan(spark):
    """The key reaches Spark as a broadcast one-row DataFrame, not as a literal: nothing
    that prints a plan (explain, the UI, an error's message) can show it."""
    key = b"plan-probe-key-5e1f0c2d9a8b7c6d"
    pseudonymizer = Pseudonymizer(spark, SecretKey(key, "1", "test"), tag="plan")
    df = pseudonymizer.attach(spark.createDataFrame([("C0001",)], "v string"))
    hashed = df.select(pseudonymizer.hmac_hex(F.col("v")).alias("h"))
    assert hashed.first().h == hmac.new(key, b"C0001", hashlib.sha256).hexdigest()
    plans = hashed._jdf.queryExecution().toString() + hashed._jdf.queryExecution().executedPlan().toString()
    padded = [bytes(b ^ pad for b in key.ljust(64, b"\0")) for pad in (0x36, 0x5C)]  # HMAC's inner and outer pads
    for secret in (key, *padded):
        for form in (secret.hex(), secret.hex().upper(), secret.decode("latin-1")):
            assert form not in plans
