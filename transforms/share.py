"""Third-party sharing: recipient pseudonyms and the disclosure log.

A share (``kind: share``) exports a dataset's consented rows to one recipient. Its
pseudonyms are HMAC(recipient key, our pseudonym): the recipient key is derived from
the pseudonymisation key for that recipient alone (``keys.recipient_key``), so two
recipients' copies have no pseudonym in common, and since erasure tombstones hold our
pseudonyms, the same chain maps an erased subject to its pseudonym in every export.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from transforms.keys import SecretKey, recipient_key
from transforms.lake import Lake
from transforms.policy import Policy
from transforms.pseudonym import Pseudonymizer
from transforms.steps import PUBLISHING
from transforms.storage import (
    append_on_a_line_of_its_own,
    audit_entry,
    logged_entries,
    read_json,
    read_text,
    unstamped,
)


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
    logged = logged_entries(read_text(lake.disclosure_log) or "")
    earlier = [e for e in logged if e.get("export") == policy.dataset and e.get("version") == version]
    base = _unstamped(earlier[-1]) if earlier else {}
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


def _unstamped(entry: dict) -> dict:
    """A disclosure line as it describes the export, whether handed over or not."""
    return unstamped(entry, also=("not_exported",))


def _last_line_for(lake: Lake, disclosure: dict) -> dict | None:
    """The disclosure log's last line for this export (handed over, or ``not_exported``)."""
    logged = logged_entries(read_text(lake.disclosure_log) or "")
    return next((e for e in reversed(logged) if _unstamped(e) == _unstamped(disclosure)), None)


def log_disclosure(lake: Lake, disclosure: dict) -> None:
    """Appends an export's line before it is made available, unless the log's last line
    for it already says it is handed over (a retry after a crash between appending and
    recording it). After a ``not_exported`` line the export is logged again."""
    last = _last_line_for(lake, disclosure)
    if last is None or "not_exported" in last:
        append_on_a_line_of_its_own(lake.disclosure_log, audit_entry(_unstamped(disclosure)))


def log_not_exported(lake: Lake, dataset: str, run_id: str, why: str) -> None:
    """When a share run that logged its disclosure cannot make the export current (refused
    on retry, its staged output purged or expired), the log says so under the same line:
    no customer is counted as disclosed by an export never made. The last line of an
    export counts."""
    intent = read_json(lake.step_state(dataset, run_id, PUBLISHING))
    if not intent or intent.get("disclosure") is None or intent.get("pointed"):
        return
    last = _last_line_for(lake, intent["disclosure"])
    if last is not None and "not_exported" not in last:
        entry = {**_unstamped(intent["disclosure"]), "not_exported": why}
        append_on_a_line_of_its_own(lake.disclosure_log, audit_entry(entry))
