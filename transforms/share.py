"""Third-party sharing: recipient pseudonyms and the disclosure log.

A share (``kind: share``) exports a dataset's consented rows to one recipient. Its
pseudonyms are HMAC(recipient key, our pseudonym): the recipient key is derived from
the pseudonymisation key for that recipient alone (``keys.recipient_key``), so two
recipients' copies have no pseudonym in common, and since erasure tombstones hold our
pseudonyms, the same chain maps an erased subject to its pseudonym in every export.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from transforms.keys import SecretKey, recipient_key
from transforms.lake import Lake
from transforms.policy import Policy
from transforms.pseudonym import Pseudonymizer
from transforms.storage import audit_entry, read_text


@dataclass(frozen=True)
class ChainedPseudonymizer:
    """``then(first(value))``: a recipient's pseudonym of what ``first`` pseudonymises."""

    first: Pseudonymizer
    then: Pseudonymizer

    @property
    def key(self) -> SecretKey:
        return self.then.key

    def attach(self, df: DataFrame) -> DataFrame:
        return self.then.attach(self.first.attach(df))

    def detach(self, df: DataFrame) -> DataFrame:
        return self.then.detach(self.first.detach(df))

    def hmac_hex(self, value: Column) -> Column:
        return self.then.hmac_hex(self.first.hmac_hex(value))


def recipient_pseudonymizer(spark: SparkSession, key: SecretKey, policy: Policy) -> Pseudonymizer:
    """The second link of a share's pseudonyms, for the pseudonymisation key ``key``."""
    return Pseudonymizer(spark, recipient_key(key, policy.recipient), tag="recipient")


def as_recipient_pseudonyms(
    spark: SparkSession, hashes: DataFrame, column: str, key: SecretKey, policy: Policy
) -> DataFrame:
    """``hashes`` (our pseudonyms under ``key``, in ``column``) as the share's recipient sees them."""
    outer = recipient_pseudonymizer(spark, key, policy)
    return outer.attach(hashes).select(outer.hmac_hex(F.col(column)).alias(column))


def purged_export_entry(spark: SparkSession, lake: Lake, policy: Policy, version: str, purged: str, path: str) -> dict:
    """The disclosure log's line for the copy of the current export ``version`` that an
    erasure purge makes current as ``purged``: the version's own line (its judgement,
    policy and recipient key), with the purged copy's name, path, rows and subjects."""
    logged = [json.loads(line) for line in (read_text(lake.disclosure_log) or "").splitlines() if line.strip()]
    earlier = [e for e in logged if e.get("export") == policy.dataset and e.get("version") == version]
    base = {k: v for k, v in earlier[-1].items() if k not in ("at", "user")} if earlier else {}
    rows = spark.read.parquet(path)
    return audit_entry(
        {
            **base,
            "recipient": policy.recipient,
            "purpose": policy.purpose,
            "dataset": policy.shared_dataset,
            "export": policy.dataset,
            "version": purged,
            "path": path,
            "rows": rows.count(),
            "subjects": rows.select(policy.subject_key).distinct().count(),
            "purged_from": version,
            "reason": "erasure",
        }
    )


def disclosure_entry(policy: Policy, enforce_state: dict, version: str, path: str) -> dict:
    """The disclosure log's line for an export: who received what, when, and why; logged
    with ``append_stamped_line_once``."""
    share = enforce_state["share"]
    return audit_entry(
        {
            "recipient": policy.recipient,
            "purpose": policy.purpose,
            "dataset": policy.shared_dataset,
            "export": policy.dataset,
            "version": version,
            "path": path,
            "rows": enforce_state["rows_out"],
            "subjects": share["subjects"],
            "columns": [column.name for column in policy.output_columns],
            "run_id": enforce_state["run_id"],
            "judged_at": enforce_state["judged_at"],
            "policy_path": policy.path,
            "policy_sha256": policy.sha256,
            "recipient_key_fingerprint": share["recipient_key_fingerprint"],
        }
    )
