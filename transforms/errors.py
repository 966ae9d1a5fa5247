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
