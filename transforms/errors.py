"""Errors that end a run, each with the exit status the command line returns for it.

Messages are one line and name a file, column, key or value of the *configuration*;
they never carry a value read from the data.
"""

from __future__ import annotations

EXIT_PUBLISHED = 0
EXIT_BAD_INPUT = 2
EXIT_VALIDATION_FAILED = 3


class ConsentgateError(Exception):
    """Bad input or configuration: the run stops and publishes nothing."""

    exit_code = EXIT_BAD_INPUT


class PolicyError(ConsentgateError):
    """The policy file is unreadable or declares something we cannot enforce."""


class MissingKeyError(ConsentgateError):
    """No pseudonymisation key is configured (or it is too weak)."""


class SchemaError(ConsentgateError):
    """A source or the consent log does not have the columns or types required."""


class StepStateError(ConsentgateError):
    """A step was asked to continue a run whose previous step left no usable state."""


class Superseded(StepStateError):
    """The run judged at an earlier ``t`` than the current version: it is not published
    (it would bring back rows whose consent was withdrawn since), and a backfill moves on."""

    def __init__(self, message: str, current_version: str):
        super().__init__(message)
        self.state = {"superseded_by": current_version}


class ValidationFailed(ConsentgateError):
    """The staged output failed its expectations; nothing was published."""

    exit_code = EXIT_VALIDATION_FAILED

    def __init__(self, failed: list[str]):
        self.failed = failed
        super().__init__("validation failed: " + ", ".join(failed))


def describe(err: BaseException) -> str:
    """An unexpected error by its type (and Spark's error condition), never its message,
    which may quote data."""
    condition = getattr(err, "getCondition", lambda: None)()
    return f"{type(err).__name__}{f' [{condition}]' if condition else ''}"


def unreadable_file(err: BaseException) -> tuple[str, str] | None:
    """``(path, condition)`` when a Spark job failed on a file it could not read (damage
    inside a Parquet file shows only when its pages are read, deep in a job), else None.

    The path's partition values are left out (``order_month=…``): a source may be
    partitioned by a column holding personal data. The file's own name stays."""
    throwable = getattr(err, "java_exception", None) or getattr(err, "_origin", None)
    for _ in range(20):  # down the chain of causes, as far as Spark nests them
        if throwable is None:
            return None
        try:
            condition = throwable.getCondition()
            parameters = dict(throwable.getMessageParameters()) if condition else {}
        except Exception:  # noqa: BLE001 - not a SparkThrowable
            condition, parameters = None, {}
        # A file gone since the job listed it is not damage (a concurrent change).
        damaged = condition and condition.startswith("FAILED_READ_FILE") and condition != _FILE_GONE
        if damaged and parameters.get("path"):
            return without_partition_values(parameters["path"]), condition
        try:
            throwable = throwable.getCause()
        except Exception:  # noqa: BLE001 - the chain cannot be followed: no file to name
            return None
    return None


_FILE_GONE = "FAILED_READ_FILE.FILE_NOT_EXIST"


def without_partition_values(path: str) -> str:
    return "/".join(f"{part.split('=', 1)[0]}=…" if "=" in part else part for part in path.split("/"))
