"""Schema checks at the boundaries: what the consent log, the erasure requests and a
source must hold before anything is judged. A mismatch stops the run (exit 2) with the
file and column named."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.utils import AnalysisException

from transforms.errors import SchemaError, describe
from transforms.rules import TEMPORAL_TYPES, type_family

CONSENT_COLUMNS = {
    "subject_id": ("string",),
    "purpose": ("string",),
    "status": ("string",),
    "recorded_at": ("timestamp",),
    "expires_at": ("timestamp",),
    "source": ("string",),
}
ERASURE_COLUMNS = {
    "subject_id": ("string",),
    "requested_at": ("timestamp",),
}


def read_parquet(
    spark: SparkSession, path: str, required: bool = True, empty_is_absent: bool = True, schema: str | None = None
) -> DataFrame | None:
    """The Parquet dataset at ``path``; None when it is absent and not required.

    With ``empty_is_absent=False`` a folder that exists but holds no readable Parquet
    (e.g. what a crashed append leaves) is an error, not "nothing there". With a
    ``schema``, files written before a column existed read it as null (Spark would
    otherwise take the schema of whichever file it reads first).
    """
    try:
        return (spark.read if schema is None else spark.read.schema(schema)).parquet(path)
    except AnalysisException as err:
        condition = err.getCondition() or ""
        absent = condition == "PATH_NOT_FOUND" or (empty_is_absent and condition == "UNABLE_TO_INFER_SCHEMA")
        if absent and not required:
            return None
        if condition in ("PATH_NOT_FOUND", "UNABLE_TO_INFER_SCHEMA"):
            raise SchemaError(f"{path}: no Parquet data found") from None
        raise SchemaError(f"{path}: cannot be read ({condition or type(err).__name__})") from None
    except Exception as err:  # noqa: BLE001 - a damaged footer read for the schema; the message may quote bytes
        raise SchemaError(f"{path}: cannot be read ({describe(err)})") from None


def require_readable(df: DataFrame, path: str) -> None:
    """Spark reads files lazily: a damaged file (a crashed append, a stray copy) would only
    fail deep in the run, as an internal error. Counting reads every file's footer now, so
    such a folder stops the run with a reason naming it."""
    try:
        df.count()
    except Exception as err:  # noqa: BLE001 - Spark's message may quote the file's bytes
        raise SchemaError(f"{path}: cannot be read ({describe(err)})") from None


def require_columns(df: DataFrame, path: str, columns: dict[str, tuple[str, ...]]) -> None:
    types = {field.name: type_family(field.dataType) for field in df.schema.fields}
    for name, allowed in columns.items():
        if name not in types:
            raise SchemaError(f"{path}: column {name!r} is missing")
        if types[name] not in allowed:
            raise SchemaError(f"{path}: column {name!r} is {types[name]}, expected {' or '.join(allowed)}")


CONSENT_SCHEMA = (
    "subject_id string, purpose string, status string, recorded_at timestamp, expires_at timestamp, source string"
)


def check_event_time_type(dtype, path: str, column: str) -> None:
    if type_family(dtype) not in TEMPORAL_TYPES:
        raise SchemaError(
            f"{path}: event time column {column!r} is {dtype.simpleString()}, expected a date or timestamp"
        )
