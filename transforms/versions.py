"""The retained versions of ``clean.<dataset>``: how many are kept, and rolling back.

Versions are ordered by the instant ``t`` they were judged at (their ``_judged_at``
marker), then by when they were written. Publish keeps the current version and the
``keep_versions - 1`` newest others, and removes the rest. ``consentgate rollback``
makes a retained version current again (catalog first, then ``CURRENT``) and logs it in
``reports/<dataset>/rollbacks.jsonl``; the next run judges afresh and publishes over it.
"""

from __future__ import annotations

from pyspark.sql import SparkSession

from transforms.errors import ConsentgateError, describe
from transforms.fs import exists, list_dirs, modified_at, remove
from transforms.key_continuity import fingerprint_of, recorded_keys
from transforms.lake import Lake, judged_at_marker, split_export
from transforms.storage import append_audit_line, read_text


def versions_newest_first(spark: SparkSession, lake: Lake, dataset: str) -> list[str]:
    def order(version: str) -> tuple[str, float]:
        folder = lake.clean_version(dataset, version)
        return ((read_text(judged_at_marker(folder)) or "").strip(), modified_at(spark, folder))

    return sorted(list_dirs(spark, lake.clean(dataset)), key=order, reverse=True)


def prune_versions(spark: SparkSession, lake: Lake, dataset: str, current: str, keep: int) -> list[str]:
    """Removes all but the current version and the ``keep - 1`` newest others."""
    others = [v for v in versions_newest_first(spark, lake, dataset) if v != current]
    removed = others[keep - 1 :]
    for version in removed:
        remove(spark, lake.clean_version(dataset, version))
    return removed


_KEY_KINDS = {"hmac": "pseudonymisation", "encryption": "encryption"}


def _require_same_keys(lake: Lake, dataset: str, folder: str, version: str, current: str) -> None:
    """A rollback across a key change would mix keys in what analysts read, and erasure
    could not reach the rows (publish retires such versions; a failed clean-up may not)."""
    now = recorded_keys(lake, dataset, lake.clean_version(dataset, current), current)
    then = recorded_keys(lake, dataset, folder, version)
    if now is not None and then is None:
        raise ConsentgateError(f"{folder}: no record of the keys it was made with")
    for kind, purpose in _KEY_KINDS.items():
        mine, theirs = fingerprint_of(then, kind), fingerprint_of(now, kind)
        if mine != theirs and ((mine and theirs) or kind == "hmac"):
            raise ConsentgateError(f"{folder}: made with another {purpose} key than the current version")


def rollback(spark: SparkSession, lake: Lake, dataset: str, version: str, reason: str) -> dict:
    from transforms.publish import current_version, repoint_current

    if split_export(dataset) is not None:
        # The recipient would get an older judgement, with customers who withdrew since.
        raise ConsentgateError(f"{dataset}: a share's export is never rolled back; run the share again")
    if not reason.strip():
        raise ConsentgateError("--reason is required: why the rollback, for the rollback log")
    folder = lake.clean_version(dataset, version)
    retained = list_dirs(spark, lake.clean(dataset))
    if version not in retained or not exists(spark, folder):
        raise ConsentgateError(f"{folder}: no such version (retained: {', '.join(retained) or 'none'})")
    current = current_version(lake, dataset)
    if version == current:
        raise ConsentgateError(f"{folder}: already the current version")
    if current is not None:
        _require_same_keys(lake, dataset, folder, version, current)
    entry = {
        "reason": reason.strip(),
        "dataset": dataset,
        "from": current,
        "to": version,
        "judged_at": (read_text(judged_at_marker(folder)) or "").strip() or None,
    }
    # Logged before the swap, so that no rollback goes unlogged (a job killed between the
    # two); one that then fails says so in a second line.
    log = lake.path("reports", dataset, "rollbacks.jsonl")
    logged = append_audit_line(log, entry)
    try:
        repoint_current(spark, lake, dataset, version)
    except Exception as err:
        append_audit_line(log, {**entry, "failed": describe(err)})
        raise
    return logged
