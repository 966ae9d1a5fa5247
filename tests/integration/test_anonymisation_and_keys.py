"""The anonymisation rules and the keys on a generated lake, end to end through
``consentgate run``: k-anonymity, date shifting, encryption and ``consentgate decrypt``,
a dictionary attack on the output, and a key rotation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import shutil
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from tests.conftest import TEST_KEY
from tests.lakecheck import current_version_dir, expected_reasons, read_rows
from tests.reference import ACTIONS, normalize
from transforms.cli import main
from transforms.generate import generate_lake
from transforms.lake import Lake

pytestmark = pytest.mark.integration
RUN_DATE = date(2026, 11, 28)
DATASET = "orders_private"
ENCRYPTION_KEY = base64.b64encode(bytes(range(7, 39))).decode()
ROTATED_KEY = "rotated-hmac-key-for-the-rotation-test"
POLICY = f"""\
dataset: {DATASET}
source: raw/orders
subject_key: customer_id
event_time: ordered_at
purpose: analytics
retention_days: 730
quasi_identifiers: [zip_code, ordered_at, channel]
k_min: 4
columns:
  order_id: keep
  customer_id: {{consented: pseudonymize, anonymized: drop}}
  email:       {{consented: encrypt, anonymized: redact}}
  phone:       {{consented: mask:2, anonymized: drop}}
  full_name:   {{consented: redact, anonymized: drop}}
  zip_code:    {{consented: keep, anonymized: generalize:prefix2}}
  ordered_at:  {{consented: date_shift:30, anonymized: generalize:month}}
  channel: keep
  amount: keep
"""


def pseudonym(subject: str, key: str = TEST_KEY) -> str:
    return hmac.new(key.encode(), subject.encode(), hashlib.sha256).hexdigest()


@pytest.fixture(scope="module")
def env():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONSENTGATE_HMAC_KEY", TEST_KEY)
        patch.setenv("CONSENTGATE_ENCRYPTION_KEY", ENCRYPTION_KEY)
        patch.delenv("CONSENTGATE_HMAC_KEY_VERSION", raising=False)
        patch.delenv("CONSENTGATE_HMAC_PREVIOUS_KEYS", raising=False)
        yield patch


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory, env):
    lake = Lake.at(str(tmp_path_factory.mktemp("anonymisation_lake")))
    generate_lake(spark, lake, customers=300, orders=4000, seed=5, run_date=RUN_DATE, orders_by_month=False)
    # Three customers with orders ask for erasure, so the rotation test has subjects to keep out.
    requests = spark.read.parquet(lake.erasure_requests)
    buyers = spark.read.parquet(lake.raw("orders")).select("customer_id").distinct().orderBy("customer_id").limit(3)
    asked = buyers.selectExpr(
        *[
            "customer_id AS subject_id" if name == "subject_id" else f"CAST(NULL AS {dtype}) AS {name}"
            for name, dtype in requests.dtypes
        ]
    ).withColumn("requested_at", F.lit(datetime(2026, 11, 1, tzinfo=UTC)))
    requests.unionByName(asked).localCheckpoint().write.mode("overwrite").parquet(lake.erasure_requests)
    return lake


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("policies") / f"{DATASET}.yml"
    path.write_text(POLICY)
    return path


def run(lake: Lake, policy_file: Path, run_id: str) -> int:
    return main(
        ["run", "--policy", str(policy_file), "--lake", lake.root, "--run-date", "2026-11-28", "--run-id", run_id]
    )


@pytest.fixture(scope="module")
def first(lake, policy_file):
    expected = expected_reasons(lake.root, RUN_DATE)
    raw = {r["order_id"]: r for r in read_rows(Path(lake.root) / "raw" / "orders")}
    assert run(lake, policy_file, "first") == 0
    report = json.loads(Path(lake.report_json(DATASET, "first")).read_text())
    published = {r["order_id"]: r for r in read_rows(current_version_dir(lake.root, DATASET))}
    return expected, raw, report, published


def quasi_identifiers(row: dict) -> tuple:
    zip_code = row["zip_code"]
    return (None if zip_code is None else zip_code[:2], row["ordered_at"].strftime("%Y-%m"), row["channel"])


def test_anonymised_rows_of_groups_smaller_than_k_are_suppressed_and_counted(first):
    expected, raw, report, published = first
    anonymized = [order_id for order_id, reason in expected.items() if ACTIONS[reason] == "anonymized"]
    people: dict[tuple, set] = {}
    for order_id in anonymized:
        people.setdefault(quasi_identifiers(raw[order_id]), set()).add(normalize(raw[order_id]["customer_id"]))
    suppressed = {o for o in anonymized if len(people[quasi_identifiers(raw[o])]) < 4}
    assert 0 < len(suppressed) < len(anonymized)
    assert report["counts"]["k_anonymity_suppressed"] == {"dropped": len(suppressed)}
    assert report["k_anonymity"] == {
        "quasi_identifiers": ["zip_code", "ordered_at", "channel"],
        "k_min": 4,
        "suppressed": len(suppressed),
    }
    published_anonymized = {o for o, r in published.items() if r["record_state"] == "anonymized"}
    assert published_anonymized == set(anonymized) - suppressed
    groups = Counter(
        (r["zip_code"], r["ordered_at"], r["channel"]) for r in published.values() if r["record_state"] == "anonymized"
    )
    assert min(groups.values()) >= 4
    assert report["rows_in"] == sum(report["totals"].values())


def test_consented_rows_get_each_rule_exactly(first):
    expected, raw, _, published = first
    consented = [o for o, reason in expected.items() if reason == "consented"]
    assert consented and set(consented) == {o for o, r in published.items() if r["record_state"] == "consented"}
    offsets: dict[str, set] = {}
    for order_id in consented:
        before, after = raw[order_id], published[order_id]
        assert after["customer_id"] == pseudonym(normalize(before["customer_id"]))
        assert after["phone"] == "*" * (len(before["phone"]) - 2) + before["phone"][-2:]
        assert after["full_name"] == "[REDACTED]"
        assert after["zip_code"] == before["zip_code"] and after["amount"] == before["amount"]
        offsets.setdefault(after["customer_id"], set()).add(after["ordered_at"] - before["ordered_at"])
    # One offset per subject, so the intervals between a customer's orders survive.
    assert all(len(deltas) == 1 for deltas in offsets.values())
    days = [next(iter(deltas)).days for deltas in offsets.values()]
    assert all(-30 <= d <= 30 for d in days) and len(set(days)) > 5


def test_anonymised_rows_carry_no_pseudonym_ciphertext_mask_or_exact_time(first):
    _, _, _, published = first
    anonymized = [r for r in published.values() if r["record_state"] == "anonymized"]
    assert anonymized
    for row in anonymized:
        assert row["customer_id"] is row["phone"] is row["full_name"] is None
        assert row["email"] == "[REDACTED]"
        moment = row["ordered_at"]
        assert (moment.day, moment.hour, moment.minute, moment.second) == (1, 0, 0, 0)
        assert row["zip_code"] is None or len(row["zip_code"]) <= 2


def test_decrypt_restores_the_emails_for_authorised_use_and_logs_it(first, lake, policy_file, tmp_path, capsys):
    expected, raw, report, published = first
    out = tmp_path / "decrypted"
    args = ["decrypt", "--policy", str(policy_file), "--lake", lake.root, "--out", str(out), "--reason", "DSAR-1042"]
    assert main(args) == 0
    decrypted = {r["order_id"]: r for r in read_rows(out)}
    assert decrypted.keys() == published.keys()
    for order_id, row in decrypted.items():
        assert row["email"] == (raw[order_id]["email"] if row["record_state"] == "consented" else "[REDACTED]")
        assert row["customer_id"] == published[order_id]["customer_id"]  # only encrypted columns are opened
    assert oct(out.stat().st_mode & 0o777) == "0o700"
    log = [
        json.loads(line)
        for line in (Path(lake.root) / "reports" / DATASET / "decryptions.jsonl").read_text().splitlines()
    ]
    fingerprint = report["keys"]["encryption"]["fingerprint"]
    assert [(e["status"], e["reason"], e["columns"], e.get("rows"), e["key_fingerprint"]) for e in log] == [
        ("started", "DSAR-1042", ["email"], None, fingerprint),  # before any plain value is written
        ("written", "DSAR-1042", ["email"], len(published), fingerprint),
    ]
    printed = capsys.readouterr().out
    assert not any(r["email"] in printed for r in raw.values() if r["email"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".consentgate-decrypting-")] == []

    assert main(args) == 2  # never written over an existing folder
    assert "already exists" in capsys.readouterr().err
    inside = Path(lake.root) / "clean" / DATASET / "decrypted"
    assert main([*args[:-4], "--out", str(inside), "--reason", "x"]) == 2
    assert (
        capsys.readouterr().err
        == f"consentgate: {inside}: inside the lake; decrypted data goes to a folder outside it\n"
    )
    assert not inside.exists()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONSENTGATE_ENCRYPTION_KEY", bytes(range(100, 132)).hex())
        assert main([*args[:-4], "--out", str(tmp_path / "other"), "--reason", "x"]) == 2
    assert "encrypted with key version 1 (fingerprint" in capsys.readouterr().err


def test_a_decryption_that_fails_while_writing_leaves_no_plain_copy_and_says_so(first, lake, policy_file, tmp_path):
    import transforms.decrypt as decrypt

    out = tmp_path / "never"
    args = ["decrypt", "--policy", str(policy_file), "--lake", lake.root, "--out", str(out), "--reason", "DSAR-7"]
    log = Path(lake.root) / "reports" / DATASET / "decryptions.jsonl"
    logged = len(log.read_text().splitlines()) if log.exists() else 0

    def dies(path):
        raise OSError("the job died here")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(decrypt, "restrict_to_owner", dies)
        assert main(args) == 1
    lines = [json.loads(line) for line in log.read_text().splitlines()[logged:]]
    assert [(e["status"], e["reason"], e.get("error")) for e in lines] == [
        ("started", "DSAR-7", None),
        ("failed", "DSAR-7", "OSError"),
    ]
    assert list(tmp_path.iterdir()) == []  # neither the copy nor Spark's private folder


def test_a_dictionary_attack_with_unkeyed_hashes_recovers_nothing(first):
    _, raw, _, published = first
    cells = {value for row in published.values() for value in row.values() if isinstance(value, str)}
    guesses = set()
    for row in raw.values():
        for value in (row["email"], row["phone"], row["customer_id"]):
            if not value:
                continue
            for variant in {value, value.strip(), value.lower(), value.upper(), normalize(value) or ""}:
                data = variant.encode()
                for algorithm in ("md5", "sha1", "sha224", "sha256", "sha384", "sha512", "sha3_256", "blake2b"):
                    digest = hashlib.new(algorithm, data)
                    guesses |= {
                        digest.hexdigest(),
                        digest.hexdigest().upper(),
                        base64.b64encode(digest.digest()).decode(),
                    }
    assert not cells & guesses
    # The keyed pseudonyms are there: with the key, the same guess does match.
    keyed = {pseudonym(normalize(r["customer_id"])) for r in raw.values() if normalize(r["customer_id"])}
    assert cells & keyed
    assert not cells & {r["email"] for r in raw.values()} and not cells & {r["phone"] for r in raw.values()}


def test_a_key_rotation_is_visible_never_mixes_and_keeps_erased_subjects_out(first, lake, policy_file, env, capsys):
    expected, raw, report, _ = first
    erased = {o for o, reason in expected.items() if reason == "erased"}
    assert erased and report["keys"]["hmac"] == {"version": "1", "fingerprint": report["key_fingerprint"]}
    old_fingerprint = report["key_fingerprint"]
    # The request log is purged: only the tombstones (made with the old key) remember.
    shutil.rmtree(Path(lake.root) / "raw" / "erasure_requests")

    env.setenv("CONSENTGATE_HMAC_KEY", ROTATED_KEY)
    assert run(lake, policy_file, "same-version") == 2
    assert "give a new key a new version" in capsys.readouterr().err
    env.setenv("CONSENTGATE_HMAC_KEY_VERSION", "2")
    assert run(lake, policy_file, "no-previous-key") == 2
    message = capsys.readouterr().err
    assert f"(fingerprint {old_fingerprint}) needs that key in CONSENTGATE_HMAC_PREVIOUS_KEYS" in message

    env.setenv("CONSENTGATE_HMAC_PREVIOUS_KEYS", json.dumps([TEST_KEY]))
    assert run(lake, policy_file, "rotated") == 0
    rotated = json.loads(Path(lake.report_json(DATASET, "rotated")).read_text())
    assert rotated["key_rotation"]["hmac"]["from"] == {"version": "1", "fingerprint": old_fingerprint}
    assert rotated["key_rotation"]["hmac"]["to"]["version"] == "2"
    assert rotated["retired_versions"] == ["first"]
    versions = sorted(p.name for p in (Path(lake.root) / "clean" / DATASET).iterdir() if p.is_dir())
    assert versions == ["rotated"]
    published = {r["order_id"]: r for r in read_rows(current_version_dir(lake.root, DATASET))}
    assert not erased & published.keys()
    consented = [r for r in published.values() if r["record_state"] == "consented"]
    assert consented and all(
        r["customer_id"] == pseudonym(normalize(raw[r["order_id"]]["customer_id"]), ROTATED_KEY) for r in consented
    )

    # Without the retired key the tombstones made with it cannot be matched: stop.
    env.delenv("CONSENTGATE_HMAC_PREVIOUS_KEYS")
    assert run(lake, policy_file, "forgot-previous-key") == 2
    assert f"tombstones were made with key fingerprint {old_fingerprint}" in capsys.readouterr().err
    assert current_version_dir(lake.root, DATASET).name == "rotated"
