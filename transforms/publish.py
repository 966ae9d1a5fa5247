"""The publish job: make a validated staged output the current version of
``clean.<dataset>``.

The staged folder is moved (not rewritten) to ``clean/<dataset>/<version>/``, so what
analysts read is byte for byte what was validated. The catalog table is then pointed
at it with ``ALTER TABLE ... SET LOCATION`` and the ``CURRENT`` pointer file (for
readers without Spark) is replaced last: a reader sees the old version or the new one,
never a mix. The policy's ``keep_versions`` newest versions stay in place (see
``versions``).
"""

from __future__ import annotations

import time

from pyspark.sql import SparkSession

from transforms.errors import MissingKeyError, StepStateError, Superseded, describe
from transforms.fs import exists, file_sizes, list_dirs, move, remove
from transforms.incremental import publish_ledger
from transforms.key_continuity import (
    check_publishable_keys,
    read_keys_marker,
    recorded_keys,
    versions_keyed_otherwise,
)
from transforms.lake import Lake, inputs_read_marker, is_purged_copy_of, judged_at_marker, split_export
from transforms.partitions import partition_columns
from transforms.policy import Policy
from transforms.steps import PUBLISHING, load_step, save_step
from transforms.storage import read_json, read_text, write_json, write_text
from transforms.versions import prune_versions

DATABASE = "clean"


def table_name(dataset: str) -> str:
    return f"{DATABASE}.{dataset}"


def current_version(lake: Lake, dataset: str) -> str | None:
    text = read_text(lake.current_pointer(dataset))
    return text.strip() if text else None


def current_path(lake: Lake, dataset: str) -> str | None:
    version = current_version(lake, dataset)
    return lake.clean_version(dataset, version) if version else None


def _free_version(spark: SparkSession, lake: Lake, dataset: str, run_id: str) -> str:
    """The run id, or run id + ``.N`` when a rerun of the same run already published (or
    an erasure purge made ``<run id>.erased`` of it: a version of the name again would make
    that retained version look like a purge's leftover of it)."""
    taken = set(list_dirs(spark, lake.clean(dataset)))
    version, attempt = run_id, 1
    while version in taken or any(is_purged_copy_of(name, version) for name in taken):
        attempt += 1
        version = f"{run_id}.{attempt}"
    return version


def point_table_at(spark: SparkSession, table: str, location: str) -> None:
    # Hive's metastore logs IF NOT EXISTS on an existing database as an error with a stack trace.
    if not spark.catalog.databaseExists(DATABASE):
        spark.sql(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    quoted = location.replace("'", "\\'")
    if not spark.catalog.tableExists(table):
        _create_table(spark, table, location)
        return
    new_schema = spark.read.parquet(location).schema
    partitioned_by = [c.name for c in spark.catalog.listColumns(table) if c.isPartition]
    if spark.table(table).schema != new_schema or partitioned_by != partition_columns(spark, location):
        # The policy changed the output's columns or partitions: the table must be defined anew.
        spark.sql(f"DROP TABLE {table}")
        _create_table(spark, table, location)
        return
    spark.sql(f"ALTER TABLE {table} SET LOCATION '{quoted}'")
    spark.sql(f"REFRESH TABLE {table}")


_CATALOG_PARTITIONS = "spark.sql.hive.manageFilesourcePartitions"


def _create_table(spark: SparkSession, table: str, location: str) -> None:
    """A table over the folder at ``location``; Spark reads its columns and partitioning
    from the files.

    Its partitions are found in the folder, not listed in the metastore: a partition
    listed there would keep pointing at the old version's folder after ``SET LOCATION``,
    which then could not swap versions in one step.
    """
    quoted = location.replace("'", "\\'")
    before = spark.conf.get(_CATALOG_PARTITIONS)
    spark.conf.set(_CATALOG_PARTITIONS, "false")
    try:
        spark.sql(f"CREATE TABLE {table} USING parquet LOCATION '{quoted}'")
    finally:
        spark.conf.set(_CATALOG_PARTITIONS, before)


def repoint_current(spark: SparkSession, lake: Lake, dataset: str, version: str) -> None:
    """Makes ``version`` (already in place) the current one: catalog first, then CURRENT.
    A share's export is handed to its recipient, not offered to analysts: no table."""
    if split_export(dataset) is None:
        point_table_at(spark, table_name(dataset), lake.clean_version(dataset, version))
    write_text(lake.current_pointer(dataset), version + "\n")


def retire_versions_of_other_keys(spark: SparkSession, lake: Lake, dataset: str, version: str) -> list[str]:
    """After a key rotation is published, the versions made with the old key go: rolling
    back to one would mix keys, and erasure could not reach it without the old key."""
    marker = read_keys_marker(lake.clean_version(dataset, version))
    if marker is None:
        return []
    stale = [v for v in versions_keyed_otherwise(spark, lake, dataset, marker) if v != version]
    for old in stale:
        remove(spark, lake.clean_version(dataset, old))
    return stale


def _earlier_attempt(
    spark: SparkSession, lake: Lake, dataset: str, run_id: str, staged_exists: bool, current: str | None
) -> tuple[dict | None, bool]:
    """What an earlier attempt of this publish recorded in its intent file, and whether it
    moved the output already: ``(intent, moved)``; ``(None, False)`` when there is none.

    A move that never happened keeps the attempt's version and disclosure line (so the
    retry logs no second one); a moved output is taken up from clean/. An attempt that
    may have pointed the table at its version, which is not current now (rolled back,
    replaced by a newer run, renamed by an erasure purge), stops: clearing a publish must
    not bring a version back over what was decided after it."""
    intent = read_json(lake.step_state(dataset, run_id, PUBLISHING))
    if intent is None:
        return None, False
    if intent.get("pointed") and intent["version"] != current:
        raise StepStateError(
            f"run {run_id} published {intent['version']} (or was stopped while doing so), which is not the "
            f"current version ({current}): a cleared publish does not bring it back; run the DAG again to judge anew"
        )
    target = lake.clean_version(dataset, intent["version"])
    moved = exists(spark, target)
    if moved and staged_exists and intent.get("files") is not None:
        # Both there: a move stopped half way. On an object store a move is a copy, then
        # the source's deletion: a copy that is not whole yet is made again from the
        # source; a whole one is the output (its source may be half deleted).
        if file_sizes(spark, target) != intent["files"]:
            remove(spark, target)
            moved = False
    if moved or staged_exists:
        return intent, moved
    return None, False


def _table_reads(spark: SparkSession, dataset: str, folder: str) -> bool:
    """Whether the catalog table of ``dataset`` reads ``folder`` (a share has no table).
    False when that cannot be told (the catalog down, the usual reason a swap fails):
    the publish may then be retried, as before the catalog could be asked."""
    if split_export(dataset) is not None:
        return False
    try:
        rows = spark.sql(f"DESCRIBE TABLE EXTENDED {table_name(dataset)}").collect()
    except Exception:  # noqa: BLE001 - unreachable, or no table yet
        return False
    location = next((row["data_type"] for row in rows if row["col_name"] == "Location"), None)
    return bool(location) and location.rstrip("/").endswith("/" + folder.rstrip("/").rsplit("/", 1)[-1])


def _require_its_base_current(enforce_state: dict, current: str, run_id: str) -> None:
    """An incremental run took periods from the version current when it was enforced: once
    another is current (a rollback away from it, say), publishing would bring those
    periods back over it. (A purge's ``<version>.erased`` is that version, purged.)"""
    plan = enforce_state.get("incremental") or {}
    base = plan.get("previous_version")
    if plan.get("mode") != "incremental" or base is None or current == base or is_purged_copy_of(current, base):
        return
    raise StepStateError(
        f"run {run_id} took periods from version {base}, which is no longer the current version ({current}): "
        "run it again (enforce) to judge on the current one"
    )


def _staler_than_current(lake: Lake, dataset: str, current: str, run_id: str, enforce_state: dict) -> str | None:
    """Why the run's output is older than the current version's, or None. Older is judged
    at an earlier ``t``, or at the same ``t`` from inputs read before the current
    version's were: a withdrawal recorded before ``t`` that reached the consent log late
    is in the current version and not in the run's (a run left waiting to publish while
    another run of the same date published, a cleared old publish)."""
    folder = lake.clean_version(dataset, current)
    current_t = (read_text(judged_at_marker(folder)) or "").strip()
    run_t = enforce_state["judged_at"]
    if current_t > run_t:
        return (
            f"run {run_id} was judged at {run_t}, before the current version {current} ({current_t}): "
            "an older judgement is not published"
        )
    current_read = (read_text(inputs_read_marker(folder)) or "").strip()
    run_read = enforce_state.get("inputs_read_at") or ""
    if current_t == run_t and run_read and current_read > run_read:
        return (
            f"run {run_id} read its inputs at {run_read}, before the current version {current} judged the same "
            f"instant from inputs read at {current_read}: an older judgement is not published"
        )
    return None


def _require_publishable_over(
    spark: SparkSession,
    lake: Lake,
    policy: Policy,
    run_id: str,
    enforce_state: dict,
    previous: str,
    output: str,
    staged: str,
) -> None:
    """Refuses an output that may not replace the current version ``previous``."""
    # An older judgement would bring back rows whose consent was withdrawn since.
    stale = _staler_than_current(lake, policy.dataset, previous, run_id, enforce_state)
    if stale is not None:
        # Never to be published, and it may hold customers who withdrew since: the
        # counts stay in the report, the rows go (a moved output was never current:
        # one that may have been stopped in _earlier_attempt).
        remove(spark, output)
        remove(spark, lake.staged_ledger(policy.dataset, run_id))
        raise Superseded(stale, current_version=previous)
    _require_its_base_current(enforce_state, previous, run_id)
    check_publishable_keys(
        read_keys_marker(output),
        recorded_keys(lake, policy.dataset, lake.clean_version(policy.dataset, previous), previous),
        enforce_state.get("key_rotation") or {},
        staged,
    )


def run_publish(spark: SparkSession, policy: Policy, lake: Lake, run_id: str) -> dict:
    try:
        return _publish(spark, policy, lake, run_id)
    except (StepStateError, MissingKeyError) as refused:
        if policy.is_share:
            # An earlier attempt may have logged the disclosure (unless it made the export
            # current): the log says it was not handed over.
            from transforms.share import log_not_exported

            log_not_exported(lake, policy.dataset, run_id, str(refused))
        raise


def _publish(spark: SparkSession, policy: Policy, lake: Lake, run_id: str) -> dict:
    started = time.monotonic()
    enforce_state = load_step(lake, policy.dataset, run_id, "enforce")
    validation = load_step(lake, policy.dataset, run_id, "validate")
    if not validation.get("success"):
        raise StepStateError(f"run {run_id} did not pass validation; nothing to publish")
    staged = enforce_state["staging_path"]
    previous = current_version(lake, policy.dataset)
    staged_exists = exists(spark, staged)
    # An earlier attempt may have stopped before the move, between the move and the
    # swap (the catalog busy, say) or after the swap (pruning failed): it is finished.
    earlier, moved = _earlier_attempt(spark, lake, policy.dataset, run_id, staged_exists, previous)
    if validation.get("validated_path") != staged or not (staged_exists or moved):
        raise StepStateError(f"{staged}: the validated output is not there to publish")
    intent_path = lake.step_state(policy.dataset, run_id, PUBLISHING)
    version = earlier["version"] if earlier else _free_version(spark, lake, policy.dataset, run_id)
    target = lake.clean_version(policy.dataset, version)
    output = target if moved else staged
    validated = validation.get("validated_files")
    if validated is not None and file_sizes(spark, output) != validated:
        # Rewritten since it was validated (an erasure purge of a moved output that never
        # became current, say): what was validated, counted and disclosed is not this. A
        # moved one goes: never to be published, it must not wait among the retained
        # versions for a rollback to make it current.
        if moved and version != previous:  # (a rollback may have made it current since: it stays)
            remove(spark, target)
        raise StepStateError(f"{output}: not the output validated (its files changed since); run enforce again")
    if previous is not None and previous != version:
        _require_publishable_over(spark, lake, policy, run_id, enforce_state, previous, output, staged)
    intent = earlier or {"version": version, "previous": previous, "disclosure": None, "pointed": False}
    if not moved and intent.get("files") is None:
        intent["files"] = file_sizes(spark, staged)  # what the moved output must hold
    write_json(intent_path, intent)
    if policy.is_share:
        from transforms.share import disclosure_entry, log_disclosure

        # Recorded in the intent first, then logged unless the log has it (a retry after a
        # crash in between), before the export is made available: a disclosure is never
        # unrecorded, nor recorded twice.
        if intent["disclosure"] is None:
            intent["disclosure"] = disclosure_entry(policy, enforce_state, version, target)
            write_json(intent_path, intent)
        log_disclosure(lake, intent["disclosure"])
    if not moved:
        move(spark, staged, target)
    # Before the swap is recorded: it can be repeated, so a job killed while it moves the
    # ledger leaves a retry free to finish (the current version then has no ledger, and
    # the next run is full, should the retry never come).
    publish_ledger(spark, lake, policy.dataset, run_id, version)
    # Recorded before the swap: a job killed during it must not leave a retry free to
    # undo it later. A swap that failed (and left CURRENT as it was) is recorded undone.
    write_json(intent_path, {**intent, "pointed": True})
    try:
        repoint_current(spark, lake, policy.dataset, version)
    except BaseException:
        # Undone only if neither pointer moved: a catalog already on the version (CURRENT
        # failing after it) was seen by analysts, and a later retry must not redo it.
        if current_version(lake, policy.dataset) != version and not _table_reads(spark, policy.dataset, target):
            write_json(intent_path, {**intent, "pointed": False})
        raise
    # The version is current from here on: a clean-up that fails is reported as such, not
    # as a publish that did not happen (the next publish removes what this one left).
    retired, pruned, cleanup_error = [], [], None
    try:
        retired = retire_versions_of_other_keys(spark, lake, policy.dataset, version)
        pruned = prune_versions(spark, lake, policy.dataset, version, policy.keep_versions)
    except Exception as err:  # noqa: BLE001 - the message may quote a path of the lake only, but the type suffices
        cleanup_error = f"removing older versions failed: {describe(err)}"
    state = {
        "ok": True,
        "published": True,
        "version": version,
        "previous_version": intent["previous"],
        "published_path": target,
        "retired_versions": retired,
        "removed_versions": pruned,
        "table": None if policy.is_share else table_name(policy.dataset),
        "seconds": round(time.monotonic() - started, 3),
    }
    if intent["disclosure"] is not None:
        state["disclosure"] = intent["disclosure"]
    if cleanup_error is not None:
        state["cleanup_error"] = cleanup_error
    save_step(lake, policy.dataset, run_id, "publish", state)
    return state
