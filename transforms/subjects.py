"""Subject keys, normalised the same way in every dataset and in the consent log, so
one customer is matched, and pseudonymised, identically everywhere."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from pyspark.sql import Column
from pyspark.sql import functions as F

if TYPE_CHECKING:
    from transforms.policy import Policy

# Unicode White_Space at either end, as Java's (?U)\s sees it.
_EDGE_WHITESPACE = r"(?U)^\s+|\s+$"
# The White_Space characters below U+0080: an ASCII key needs only these trimmed.
_ASCII_WHITESPACE = "\t\n\x0b\x0c\r "


def normalize_subject(value: Column, steps: Iterable[str] = ()) -> Column:
    """Trimmed, NFC-normalised (and lower-cased when the policy says so) subject key.

    Null, and keys blank after trimming, become null: such rows are ``invalid_subject``.
    """
    trimmed = F.regexp_replace(value, _EDGE_WHITESPACE, "")
    # ICU ships with Spark; reflect() keeps NFC inside the JVM (no Python UDF).
    composed = F.call_function("reflect", F.lit("com.ibm.icu.text.Normalizer"), F.lit("compose"), trimmed, F.lit(False))
    # Most keys are ASCII, which is already NFC: they skip the regular expression and the
    # reflective call, the two costliest steps of judging a row.
    # (Spark counts an invalid byte as a character: such a key is not ASCII, it is repaired
    # by the reflective path as before.)
    is_ascii = (F.length(value) == F.octet_length(value)) & F.is_valid_utf8(value)
    nfc = F.when(is_ascii, F.btrim(value, F.lit(_ASCII_WHITESPACE))).when(value.isNotNull(), composed)
    for step in steps:
        if step == "lower":
            nfc = F.lower(nfc)
    return F.when(F.length(nfc) > 0, nfc)


def starts_like_a_key(value: Column) -> Column:
    """True only for keys that ``normalize_subject`` never makes null: a first character
    that is printable ASCII and not a space survives trimming and NFC (and lower case).
    Cheap where ``normalize_subject`` is not (a 1M-row pass normalising every key took
    twice as long as one normalising only the others): it lets a pass over every row
    normalise only the few keys that may be missing or blank."""
    return F.coalesce(F.ascii(value).between(33, 126), F.lit(False))


def key_text(policy: Policy) -> Column:
    """The policy's subject key column as text, as it is normalised."""
    return F.col(policy.subject_key).cast("string")


def policy_subject(policy: Policy) -> Column:
    """Each row's subject: its key normalised as the policy says (null when missing or blank)."""
    return normalize_subject(key_text(policy), policy.subject_key_normalize)
