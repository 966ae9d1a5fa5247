"""Which input file is damaged, when a step failed on an error that does not say.

A Parquet file whose footer is whole but whose pages are damaged passes the folder checks
(``schemas.require_readable`` reads footers) and fails only when a job decodes its
pages, often with an error that names no file (an index out of bounds in a dictionary,
a decoding error). Such a failure is bad input, not a fault of ours: after a step fails
on an unexpected error, its inputs are read whole, a folder in one job and, if that
fails, file by file, to name the file. Only failed runs pay for it.
"""

from __future__ import annotations

from pyspark.sql import SparkSession

from transforms.errors import describe, without_partition_values
from transforms.lake import Lake
from transforms.policy import Policy
from transforms.storage import list_names

MAX_FILES_READ_ONE_BY_ONE = 200


def step_inputs(lake: Lake, policy: Policy, step: str, run_id: str) -> list[str]:
    if step == "enforce":
        tombstones = [lake.tombstones_of(name) for name in list_names(lake.tombstones)]
        return [lake.path(policy.source), lake.consent, lake.erasure_requests, *tombstones]
    if step == "validate":
        return [lake.staging_data(policy.dataset, run_id), lake.consent]
    return []


def damaged_file(spark: SparkSession, folders: list[str]) -> tuple[str, str] | None:
    """``(path, error)`` of the first file of ``folders`` that cannot be read whole (or of
    its folder, when that holds too many files to read one by one); None when every file
    reads (the failure was something else) or a folder is absent."""
    for folder in folders:
        try:
            files = spark.read.parquet(folder).inputFiles()
        except Exception:  # noqa: BLE001 - absent, or not Parquet: the step's own checks tell
            continue
        error = _reads_whole(spark, [folder])
        if error is None:
            continue
        if len(files) > MAX_FILES_READ_ONE_BY_ONE:
            # One job per file would take longer than finding it by hand from the folder.
            return without_partition_values(folder), f"{error} in one of its {len(files)} files"
        for file in sorted(files):
            error = _reads_whole(spark, [file])
            if error is not None:
                return without_partition_values(file), error
    return None


def _reads_whole(spark: SparkSession, paths: list[str]) -> str | None:
    try:
        spark.read.parquet(*paths).write.format("noop").mode("overwrite").save()
    except Exception as err:  # noqa: BLE001 - the message may quote the file's bytes
        return describe(err)
    return None
