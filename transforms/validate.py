"""The validate job: run the policy's Great Expectations suite over one run's staged
output (never "the latest batch") and record the results without any data values.

On failure the staged output moves to ``quarantine/<dataset>/<run_id>/failed_output``
and nothing is published (exit 3).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from datetime import datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from transforms import schemas
from transforms.enforce import read_consent
from transforms.erasure import read_tombstones
from transforms.errors import MissingKeyError, StepStateError, ValidationFailed
from transforms.fs import exists, file_sizes, move, remove, upload_folder
from transforms.key_continuity import fingerprint_of, read_keys_marker
from transforms.keys import SecretKey, recipient_key
from transforms.lake import Lake, judgement_instant, parse_run_date
from transforms.policy import STATE_COLUMN, Policy
from transforms.quarantine import writing_quarantine
from transforms.steps import load_step, require_not_purged, save_step

# Great Expectations sends usage analytics unless told not to; this lake is offline.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

# Its INFO messages are internal chatter, not results.
logging.getLogger("great_expectations").setLevel(logging.WARNING)

DOCS_SITE = "consentgate"

# Only these result fields are kept: counts and table-level observations, never the
# unexpected values themselves (they would be personal data).
_KEPT_RESULT_FIELDS = ("element_count", "unexpected_count", "unexpected_percent", "missing_count")
# Up to this many output rows the slices are cached while they are validated (see
# validate_output).
SMALL_OUTPUT_ROWS = 100_000
_TABLE_LEVEL = ("expect_table_row_count_to_equal", "expect_table_columns_to_match_ordered_list")


def _summarise(slice_name: str, result) -> dict:
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "result_format")}
    summary = {
        "slice": slice_name,
        "expectation": config.type,
        "kwargs": kwargs,
        "success": bool(result.success),
    }
    details = result.result or {}
    for field in _KEPT_RESULT_FIELDS:
        if field in details:
            summary[field] = details[field]
    if config.type in _TABLE_LEVEL and "observed_value" in details:
        summary["observed_value"] = details["observed_value"]
    if result.exception_info and result.exception_info.get("raised_exception"):
        summary["error"] = "the expectation could not be evaluated"
    return summary


def expectation_label(summary: dict) -> str:
    column = summary["kwargs"].get("column")
    where = f"{summary['slice']}.{column}" if column else summary["slice"]
    return f"{summary['expectation']}({where})"


def derived_frames(
    spark: SparkSession,
    policy: Policy,
    lake: Lake,
    slices: dict[str, DataFrame],
    enforce_state: dict,
    key: SecretKey,
    judged_at: datetime,
) -> dict[str, DataFrame]:
    """Frames derived from the output's ``consented`` and ``anonymized`` slices and the lake."""
    from expectations.consent_crosscheck import unconsented_published
    from expectations.suite import CONSENT_CROSSCHECK, K_ANONYMITY_GROUPS, QUARANTINE, RULE_CONFORMANCE

    consent = read_consent(spark, lake)
    outer = recipient_key(key, policy.recipient).material if policy.is_share else None
    tombstones = read_tombstones(spark, lake)
    fingerprint = F.col("key_fingerprint")
    erased = tombstones.filter(fingerprint.isNull() | (fingerprint == key.fingerprint)).select("_cg_subject_hash")
    unconsented = unconsented_published(
        spark, slices["consented"], consent, policy, judged_at, key.material, outer, erased
    )
    frames = {CONSENT_CROSSCHECK: unconsented} if unconsented is not None else {}
    conformance = rule_conformance(spark, policy, slices["all"])
    if conformance is not None:
        frames[RULE_CONFORMANCE] = conformance
    if policy.quasi_identifiers:
        groups = slices["anonymized"].groupBy(*policy.quasi_identifiers).agg(F.count("*").alias("rows"))
        frames[K_ANONYMITY_GROUPS] = groups
    if enforce_state.get("quarantine_path"):
        frames[QUARANTINE] = spark.read.parquet(enforce_state["quarantine_path"])
    return frames


def rule_conformance(spark: SparkSession, policy: Policy, output: DataFrame) -> DataFrame | None:
    """One row counting, per re-checked (slice, column), the values its rule would change
    if applied again: a generalised or redacted value is a fixed point of its rule. One
    pass over the output, then a row of counts (no value) for the expectations."""
    from pyspark.sql.types import LongType, StructField, StructType

    from expectations.suite import conformance_column, rechecked_columns
    from transforms.rules import RuleContext

    types = {f.name: f.dataType for f in output.schema.fields}
    rechecked = rechecked_columns(policy, types)
    if not rechecked:
        return None
    counts = []
    for state, name in rechecked:
        column = policy.column(name)
        rule = column.consented if state == "consented" else column.anonymized
        value = F.col(name)
        again = rule.apply(value, types[name], RuleContext(column_name=name))
        changed = (F.col(STATE_COLUMN) == state) & ~again.eqNullSafe(value)
        counts.append(F.count_if(changed).alias(conformance_column(state, name)))
    row = output.agg(*counts).collect()[0]
    schema = StructType([StructField(conformance_column(*pair), LongType()) for pair in rechecked])
    return spark.createDataFrame([tuple(int(n) for n in row)], schema)


def quarantine_written(enforce_state: dict) -> int | None:
    if not enforce_state.get("quarantine_path"):
        return None
    withheld = enforce_state.get("quarantine_rows_withheld_for_erasure", 0)
    return enforce_state["totals"]["quarantined"] - withheld


def validate_output(
    spark: SparkSession,
    policy: Policy,
    lake: Lake,
    output: DataFrame,
    enforce_state: dict,
    key: SecretKey,
    docs_folder: str | None = None,
) -> list[dict]:
    """Every expectation's summarised result for ``output``; with ``docs_folder`` (a
    local folder), the Great Expectations Data Docs site of the results too."""
    import great_expectations as gx

    from expectations.suite import build_suite, derived_suite

    judged_at = judgement_instant(parse_run_date(enforce_state["run_date"]))
    string_columns = {f.name for f in output.schema.fields if f.dataType.simpleString() == "string"}
    slices = build_suite(policy, output.columns, string_columns, enforce_state["totals"], judged_at)
    output_types = {f.name: f.dataType for f in output.schema.fields}
    slices += derived_suite(policy, enforce_state["totals"], quarantine_written(enforce_state), output_types)

    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    # Progress bars would fill the task logs with carriage-return noise.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_folder is not None:
        context.add_data_docs_site(
            site_name=DOCS_SITE,
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": docs_folder},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    # Great Expectations persists each batch (every column, by its first metric) unless
    # told not to, and never unpersists it. Each metric job then reads the cache instead
    # of the files: cheaper on a small output (about 100,000 rows: 6.1 s a validation
    # instead of 6.8-7.0 s), far dearer on a large one (5M orders, validation alone in a
    # fresh process: 67-70 s instead of 41 s). What it caches is released below.
    persist = enforce_state["rows_out"] <= SMALL_OUTPUT_ROWS
    source = context.data_sources.add_spark(name="consentgate", persist=persist)
    asset = source.add_dataframe_asset(name=policy.dataset)
    batch_definition = asset.add_batch_definition_whole_dataframe("staged_output")
    frames = {
        "all": output,
        "consented": output.filter(F.col(STATE_COLUMN) == "consented"),
        "anonymized": output.filter(F.col(STATE_COLUMN) == "anonymized"),
    }
    frames.update(derived_frames(spark, policy, lake, frames, enforce_state, key, judged_at))
    try:
        results = _validate_slices(context, policy, slices, frames, batch_definition)
    finally:
        if persist:
            for frame in frames.values():
                frame.unpersist()
    if docs_folder is not None:
        context.build_data_docs(site_names=[DOCS_SITE])
    return results


def _validate_slices(context, policy: Policy, slices: list, frames: dict[str, DataFrame], batch) -> list[dict]:
    """Every slice's expectations run on its frame; their summarised results."""
    import great_expectations as gx

    results = []
    # Counts only: no unexpected values, neither in the results nor in the Data Docs.
    # (SUMMARY would also tally the unexpected values, a Spark job per expectation for
    # figures never kept: about 0.9 s of every validation on a small input.)
    result_format = {"result_format": "BASIC", "partial_unexpected_count": 0, "include_unexpected_rows": False}
    for group in slices:
        name = f"{policy.dataset}.{group.slice_name}"
        suite = context.suites.add(gx.ExpectationSuite(name=name))
        for expectation in group.expectations:
            suite.add_expectation(expectation)
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
        # Stored in the context's (in-memory) results store, from which the site is built once.
        frame = {"dataframe": frames[group.slice_name]}
        validation = definition.run(batch_parameters=frame, result_format=result_format)
        results.extend(_summarise(group.slice_name, r) for r in validation.results)
    return results


def run_validate(spark: SparkSession, policy: Policy, lake: Lake, run_id: str, key: SecretKey) -> dict:
    started = time.monotonic()
    enforce_state = load_step(lake, policy.dataset, run_id, "enforce")
    require_not_purged(lake, policy.dataset, run_id)
    staging_path = enforce_state["staging_path"]
    if not exists(spark, staging_path):
        raise StepStateError(f"{staging_path}: no staged output to validate; run the enforce step again")
    staged_key = fingerprint_of(read_keys_marker(staging_path), "hmac")
    if staged_key != key.fingerprint:
        raise MissingKeyError(
            f"{staging_path}: made with key fingerprint {staged_key}; this run's key has {key.fingerprint}"
        )
    # Not cached: each slice's expectations read only the columns they need, which costs
    # less than caching every column (1M rows: 6.8 s instead of 8.7 s, warm).
    # A damaged file stops here (exit 2, naming the folder) rather than as an internal error.
    # What publish must find: a purge that rewrites the output during or after this
    # validation leaves other files (and a publish of them is refused).
    validated_files = file_sizes(spark, staging_path)
    output = schemas.read_parquet(spark, staging_path)
    schemas.require_readable(output, staging_path)
    # Rendering Data Docs costs about a second a run; CONSENTGATE_DATA_DOCS=off skips it.
    render_docs = os.environ.get("CONSENTGATE_DATA_DOCS", "on") != "off"
    docs_folder = tempfile.mkdtemp(prefix="consentgate-data-docs-") if render_docs else None
    data_docs = None
    try:
        results = validate_output(spark, policy, lake, output, enforce_state, key, docs_folder)
        if docs_folder is not None:
            data_docs = lake.data_docs(policy.dataset, run_id)
            upload_folder(spark, docs_folder, data_docs)
    finally:
        if docs_folder is not None:
            shutil.rmtree(docs_folder, ignore_errors=True)
    failed = [expectation_label(r) for r in results if not r["success"]]
    state = {
        "ok": not failed,
        "success": not failed,
        "evaluated": len(results),
        "failed": failed,
        "expectations": results,
        "validated_path": staging_path,
        "validated_files": validated_files,
        "data_docs": f"{data_docs}/index.html" if data_docs else None,
        "seconds": round(time.monotonic() - started, 3),
    }
    if failed:
        state["error"] = "validation failed: " + ", ".join(failed)
        state["moved_to"] = lake.failed_output(policy.dataset, run_id)
        with writing_quarantine(lake, policy.dataset, run_id):
            move(spark, staging_path, state["moved_to"])
        remove(spark, lake.staged_ledger(policy.dataset, run_id))  # never to be published
    save_step(lake, policy.dataset, run_id, "validate", state)
    if failed:
        raise ValidationFailed(failed)
    return state
