"""TCF v2 consent strings: decoded by Spark built-ins, checked against strings encoded
here from the specification's field layout (an independent encoder)."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, timedelta

import pytest

from tests.conftest import ORDERS_POLICY
from transforms.enforce import REASON, judge
from transforms.erasure import request_hashes
from transforms.keys import SecretKey
from transforms.policy import TcfMapping, load_policy
from transforms.pseudonym import Pseudonymizer
from transforms.tcf import has_purposes

# (field, bits) of the TCF v2 core segment before PurposesConsent.
CORE_FIELDS = [
    ("Version", 6), ("Created", 36), ("LastUpdated", 36), ("CmpId", 12), ("CmpVersion", 12),
    ("ConsentScreen", 6), ("ConsentLanguage", 12), ("VendorListVersion", 12), ("TcfPolicyVersion", 6),
    ("IsServiceSpecific", 1), ("UseNonStandardTexts", 1), ("SpecialFeatureOptIns", 12),
]  # fmt: skip


OTHER_SEGMENT = "IFoEUQQgAIQwgIwQABAEAAAAOIAACAIAAAAQAIAgEAACEAAAAAgAQBAAAAAAAGBAAgAAAAAAAFAAECAAAgAAQARAEQ"


def encode_tc_string(purposes: set[int], version: int = 2) -> str:
    values = {
        "Version": version,
        "Created": 16_000_000_000,
        "LastUpdated": 16_000_000_000,
        "CmpId": 7,
        "CmpVersion": 1,
        "ConsentLanguage": 0b000100_001101,
        "VendorListVersion": 80,
        "TcfPolicyVersion": 2,
    }
    bits = "".join(format(values.get(name, 0), f"0{width}b") for name, width in CORE_FIELDS)
    bits += "".join("1" if p in purposes else "0" for p in range(1, 25))  # PurposesConsent
    bits += "0" * 24  # PurposesLITransparency
    bits += "0" * 6  # PurposeOneTreatment, PublisherCC (truncated: enough for the decoder)
    bits += "0" * (-len(bits) % 8)
    raw = int(bits, 2).to_bytes(len(bits) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    ("tc_string", "expected"),
    [
        (encode_tc_string({1, 8}), True),
        (encode_tc_string({1, 2, 3, 8, 24}) + "." + OTHER_SEGMENT, True),  # later segments are ignored
        (encode_tc_string({1}), False),  # purpose 8 missing
        (encode_tc_string({8}), False),
        (encode_tc_string({1, 8}, version=1), False),  # not a v2 string
        ("", False),
        ("not base64!", False),
        ("AA", False),  # too short to hold the purposes
        (None, False),
    ],
)
def test_tc_string_consents_to_every_mapped_purpose(spark, tc_string, expected):
    df = spark.createDataFrame([(tc_string,)], "tc string")
    assert df.select(has_purposes(df.tc, [1, 8]).alias("ok")).first().ok is expected


def test_tcf_mapping_turns_a_refusing_string_into_no_consent(spark):
    policy = load_policy(ORDERS_POLICY)
    policy = type(policy)(**{**policy.__dict__, "tcf": TcfMapping(column="tc", purposes=(1, 7))})
    t = datetime(2026, 11, 29, tzinfo=UTC)
    at = t - timedelta(days=3)
    source = spark.createDataFrame(
        [
            ("o1", "c1", at, encode_tc_string({1, 7, 9})),
            ("o2", "c1", at, encode_tc_string({1})),
            ("o3", "c1", at, None),
            ("o4", "c2", at, encode_tc_string({1, 7})),  # no grant in the log: still no consent
        ],
        "order_id string, customer_id string, ordered_at timestamp, tc string",
    )
    consent = spark.createDataFrame(
        [("c1", "analytics", "granted", t - timedelta(days=30), None, "web_form")],
        "subject_id string, purpose string, status string, recorded_at timestamp, expires_at timestamp, source string",
    )
    pseudonymizer = Pseudonymizer(spark, SecretKey(b"tcf-test-key-0123456789", "1", "test"))
    no_requests = spark.createDataFrame([], "subject_id string, requested_at timestamp")
    erased = request_hashes(no_requests, policy, date(2026, 11, 28), pseudonymizer)
    judged = judge(source, consent, erased, policy, date(2026, 11, 28), pseudonymizer)
    got = {r.order_id: r[REASON] for r in judged.select("order_id", REASON).collect()}
    assert got == {"o1": "consented", "o2": "no_consent", "o3": "no_consent", "o4": "no_consent"}
