"""``consentgate decrypt``: the authorised way back from ``encrypt`` to the plain values.

It reads one published version of ``clean.<dataset>``, checks that the encryption key
is the one that version was made with, and writes a decrypted copy to a folder of the
caller's choosing (owner-only on a local disk). Every use appends a line to
``reports/<dataset>/decryptions.jsonl``: who, when, why (a ticket reference), which
version and columns, how many rows, and the key's fingerprint; never a value.
"""

from __future__ import annotations

from functools import reduce

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from transforms.encryption import Encryptor
from transforms.errors import ConsentgateError, MissingKeyError, StepStateError
from transforms.fs import exists
from transforms.key_continuity import read_keys_marker
from transforms.keys import ENCRYPTION_KEY_ENV, SecretKey
from transforms.lake import Lake
from transforms.policy import STATE_COLUMN, Policy
from transforms.publish import current_version
from transforms.storage import append_audit_line, restrict_to_owner


def decryption_log(lake: Lake, dataset: str) -> str:
    return lake.path("reports", dataset, "decryptions.jsonl")


def run_decrypt(
    spark: SparkSession,
    policy: Policy,
    lake: Lake,
    key: SecretKey,
    out: str,
    reason: str,
    version: str | None = None,
) -> dict:
    if not reason.strip():
        raise ConsentgateError("--reason is required: a ticket or request reference for the decryption log")
    version = version or current_version(lake, policy.dataset)
    if version is None:
        raise StepStateError(f"{lake.clean(policy.dataset)}: nothing is published to decrypt")
    folder = lake.clean_version(policy.dataset, version)
    if not exists(spark, folder):
        raise StepStateError(f"{folder}: no such version")
    described = (read_keys_marker(folder) or {}).get("encryption")
    if described is None:
        raise ConsentgateError(f"{folder}: this version holds no encrypted column")
    if described["fingerprint"] != key.fingerprint:
        raise MissingKeyError(
            f"{folder}: encrypted with key version {described['version']} (fingerprint {described['fingerprint']}); "
            f"${ENCRYPTION_KEY_ENV} has fingerprint {key.fingerprint}"
        )
    if exists(spark, out):
        raise ConsentgateError(f"{out}: already exists; decrypted data is never written over other files")

    rows = spark.read.parquet(folder)
    columns = [c.name for c in policy.columns if c.consented.name == "encrypt" and c.name in rows.columns]
    if not columns:
        raise ConsentgateError(f"{policy.path}: no column of this policy is encrypted")
    encryptor = Encryptor(spark, key)
    # Only consented rows hold ciphertexts; anonymised rows hold their own rule's value.
    consented = F.col(STATE_COLUMN) == "consented"
    opened = encryptor.attach(rows).select(
        *[
            F.when(consented, Encryptor.decrypt(F.col(c), c)).otherwise(F.col(c)).alias(c) if c in columns else F.col(c)
            for c in rows.columns
        ],
        *[(consented & F.col(c).isNotNull()).alias(f"_cg_sealed_{c}") for c in columns],
    )
    failed = reduce(lambda a, b: a | b, [F.col(f"_cg_sealed_{c}") & F.col(c).isNull() for c in columns])
    not_opened = opened.filter(failed).count()
    if not_opened:
        raise ConsentgateError(f"{folder}: {not_opened} rows hold cells of {', '.join(columns)} that do not decrypt")
    plain = opened.drop(*[f"_cg_sealed_{c}" for c in columns])
    plain.write.parquet(out)
    restrict_to_owner(out)
    entry = {
        "reason": reason.strip(),
        "dataset": policy.dataset,
        "version": version,
        "columns": columns,
        "rows": spark.read.parquet(out).count(),
        "out": out,
        "key_version": key.version,
        "key_fingerprint": key.fingerprint,
    }
    return append_audit_line(decryption_log(lake, policy.dataset), entry)
