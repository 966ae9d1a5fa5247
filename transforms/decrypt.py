"""``consentgate decrypt``: the authorised way back from ``encrypt`` to the plain values.

It reads one published version of ``clean.<dataset>``, checks that the encryption key
is the one that version was made with, and writes a decrypted copy to a folder of the
caller's choosing, outside the lake (owner-only on a local disk, from its first byte).
Every use appends lines to ``reports/<dataset>/decryptions.jsonl``: one before anything
is written, one when the copy is whole (or the write failed): who, when, why (a ticket
reference), which version and columns, how many rows, and the key's fingerprint; never
a value.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from functools import reduce
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from transforms.encryption import Encryptor
from transforms.errors import ConsentgateError, MissingKeyError, StepStateError, describe
from transforms.fs import exists
from transforms.key_continuity import read_keys_marker
from transforms.keys import ENCRYPTION_KEY_ENV, SecretKey
from transforms.lake import Lake, is_local, local_path
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
    if _inside(out, lake.root):
        # Under the lake it would look like a dataset's folder (a version to roll back to,
        # say), and no erasure purge reaches what the lake does not know it holds.
        raise ConsentgateError(f"{out}: inside the lake; decrypted data goes to a folder outside it")

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
    entry = {
        "reason": reason.strip(),
        "dataset": policy.dataset,
        "version": version,
        "columns": columns,
        "out": out,
        "key_version": key.version,
        "key_fingerprint": key.fingerprint,
    }
    log = decryption_log(lake, policy.dataset)
    # Logged before any plain value is written: a copy the job leaves behind when it dies
    # (or when the log cannot be written at the end) is never unrecorded.
    append_audit_line(log, {**entry, "status": "started"})
    try:
        rows = _write_privately(spark, plain, out)
    except Exception as err:
        append_audit_line(log, {**entry, "status": "failed", "error": describe(err)})
        raise
    return append_audit_line(log, {**entry, "status": "written", "rows": rows})


def _inside(path: str, root: str) -> bool:
    if not (is_local(path) and is_local(root)):
        return path.rstrip("/").startswith(root.rstrip("/") + "/")
    # Resolved: a link into the lake is inside it.
    return Path(os.path.realpath(local_path(path))).is_relative_to(os.path.realpath(local_path(root)))


def _write_privately(spark: SparkSession, plain: DataFrame, out: str) -> int:
    """Writes ``plain`` to ``out`` and returns its row count. On a local disk Spark writes
    inside an owner-only folder beside ``out`` (its files get the default modes, readable
    by others until tightened), which is then renamed into place."""
    if not is_local(out):
        plain.write.parquet(out)
        return spark.read.parquet(out).count()
    target = os.path.abspath(local_path(out))
    os.makedirs(os.path.dirname(target), exist_ok=True)  # as Spark would make them
    private = tempfile.mkdtemp(prefix=".consentgate-decrypting-", dir=os.path.dirname(target))  # 0700
    try:
        written = os.path.join(private, "data")
        plain.write.parquet(written)
        restrict_to_owner(written)
        rows = spark.read.parquet(written).count()
        os.rename(written, target)
        return rows
    finally:
        shutil.rmtree(private, ignore_errors=True)
