"""The registry of column rules.

A rule turns a column into what a given record state may publish. Each rule is one
entry in ``RULES``: a name, a parser for its argument, the Spark types it fits and an
``apply`` built from Spark built-in functions only (no Python UDF in the data path).

pyspark is imported inside ``apply`` so that policies can be loaded where Spark is
not installed or must not be imported (Airflow parses DAG files with this module).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column
    from pyspark.sql.types import DataType

    from transforms.encryption import Encryptor
    from transforms.pseudonym import Pseudonymizer

STRING_TYPES = ("string", "varchar", "char")
INTEGRAL_TYPES = ("tinyint", "smallint", "int", "bigint")
NUMERIC_TYPES = INTEGRAL_TYPES + ("float", "double", "decimal")
TEMPORAL_TYPES = ("date", "timestamp", "timestamp_ntz")
NESTED_TYPES = ("struct", "array", "map")
REDACTED = "[REDACTED]"
MASK_CHARACTER = "*"
DEFAULT_MASK_VISIBLE = 4
MAX_DATE_SHIFT_DAYS = 3650
# Java regular expressions (Spark's regexp_replace), applied in this order: an e-mail
# address can hold digits, and a card number is a longer digit run than a phone number.
# Letters and digits of any script (\p{L}, \p{Nd}: "jörg@bücher.de", full-width digits);
# digit groups may be separated by no-break and thin spaces and Unicode dashes, as text
# pasted from documents is.
_GROUP_SEPARATOR = r"[ \u00a0\u2007\u2009\u202f\u2010-\u2015\u2212-]"
_PHONE_SEPARATOR = r"[ \t\u00a0\u2007\u2009\u202f\u2010-\u2015\u2212()./-]"
SCRUB_PATTERNS = (
    # Tried only where a run of such characters starts, and never given back: a long text
    # with no "@" (prose in a script without spaces) is scanned once, not once per letter.
    (
        "[email]",
        r"(?<![\p{L}\p{N}._%+'-])[\p{L}\p{N}._%+'-]++@[\p{L}\p{N}-]+(?:\.[\p{L}\p{N}-]+)*\.(?:xn--[A-Za-z0-9-]+|\p{L}{2,})",
    ),
    (
        "[card]",
        r"(?<![\p{Nd}+])(?:\p{Nd}{13,19}"
        rf"|\p{{Nd}}{{4}}(?:{_GROUP_SEPARATOR}\p{{Nd}}{{4}}){{3}}(?:{_GROUP_SEPARATOR}?\p{{Nd}}{{1,3}})?"
        rf"|\p{{Nd}}{{4}}{_GROUP_SEPARATOR}\p{{Nd}}{{6}}{_GROUP_SEPARATOR}\p{{Nd}}{{5}})(?!\p{{Nd}})",
    ),
    # 7 to 15 digits with short separators (a slash or " - " too), an optional extension
    # in any case, but not an ISO date.
    (
        "[phone]",
        r"(?<![\w+])(?!\d{4}-\d{2}-\d{2}(?!\d))(?:\+|\()?\p{Nd}"
        rf"(?:{_PHONE_SEPARATOR}{{0,3}}\p{{Nd}}){{6,14}}"
        r"(?:\s*(?i:x|ext\.?)\s*\p{Nd}{1,6})?(?!\p{Nd})",
    ),
)


def type_family(dtype: DataType) -> str:
    """The type's simple name without parameters: ``decimal(10,2)`` -> ``decimal``,
    ``struct<zip:string>`` -> ``struct``."""
    return re.split(r"[(<]", dtype.simpleString(), maxsplit=1)[0]


@dataclass(frozen=True)
class RuleContext:
    """What a rule may need beyond its column: keyed helpers whose key columns are attached
    to the rows, the row's normalised subject key, and the column's own name."""

    pseudonymizer: Pseudonymizer | None = None
    date_shifter: Pseudonymizer | None = None
    encryptor: Encryptor | None = None
    subject: Column | None = None
    column_name: str = ""
    # Further keyed helpers whose key columns must be attached before the rules run (a
    # share's recipient key, the second link of its pseudonyms).
    extra_keys: tuple = ()

    def for_column(self, name: str) -> RuleContext:
        from dataclasses import replace

        return replace(self, column_name=name)


@dataclass(frozen=True)
class ColumnRule:
    """One parsed rule of a policy, e.g. ``generalize:prefix3``."""

    name: str
    argument: int | str | None
    spec: RuleSpec = field(repr=False, compare=False)

    @property
    def text(self) -> str:
        return self.name if self.argument is None else f"{self.name}:{self.spec.arg_text(self.argument)}"

    @property
    def removes_value(self) -> bool:
        return self.name == "drop"

    @property
    def links_to_subject(self) -> bool:
        return self.spec.links_to_subject

    @property
    def publishes_text(self) -> bool:
        return self.spec.publishes_text

    def changes_nothing_of(self, dtype: DataType) -> bool:
        """A generalisation that leaves every value of ``dtype`` as it is: a date to its
        day, an integer to buckets of one."""
        if self.name != "generalize":
            return False
        kind, size = self.argument
        family = type_family(dtype)
        return (kind == "day" and family == "date") or (kind == "bucket" and size == 1 and family in INTEGRAL_TYPES)

    @property
    def description(self) -> str:
        """What the rule does to a value, in words, for the register and the DAG's docs."""
        return self.spec.describe(self.argument)

    def fits(self, dtype: DataType) -> bool:
        families = self.spec.fits(self.argument)
        return families is None or type_family(dtype) in families

    def apply(self, column: Column, dtype: DataType, context: RuleContext) -> Column:
        return self.spec.apply(column, dtype, self.argument, context)


@dataclass(frozen=True)
class RuleSpec:
    name: str
    apply: Callable[[Column, DataType, object, RuleContext], Column]
    fits: Callable[[object], tuple[str, ...] | None] = lambda argument: None  # None: any type
    parse_argument: Callable[[str | None], object] | None = None
    arg_text: Callable[[object], str] = str
    describe: Callable[[object], str] = lambda argument: ""
    links_to_subject: bool = False  # may not appear in anonymised rows
    publishes_text: bool = False  # the output is a string whatever the column's type
    needs_encryption_key: bool = False


class RuleSyntaxError(ValueError):
    pass


def _no_argument(argument: str | None) -> None:
    if argument is not None:
        raise RuleSyntaxError("takes no argument")
    return None


def _apply_keep(column, dtype, argument, context):
    return column


def _apply_drop(column, dtype, argument, context):
    from pyspark.sql import functions as F

    return F.lit(None).cast(dtype)


def _apply_pseudonymize(column, dtype, argument, context):
    if context.pseudonymizer is None:
        raise RuntimeError("pseudonymize needs a key; the enforce job supplies one")
    return context.pseudonymizer.hmac_hex(column.cast("string"))


# Bounds on rule arguments, far beyond any sensible value: larger ones are typos.
MAX_CHARACTERS = 100_000
MAX_BUCKET = 10**18


def _parse_count(argument: str | None) -> int | None:
    if argument is None:
        return None
    if not re.fullmatch(r"[0-9]+", argument) or int(argument) > MAX_CHARACTERS:
        raise RuleSyntaxError(f"{argument!r} is not a number of characters (0 to {MAX_CHARACTERS})")
    return int(argument)


def _apply_mask(column, dtype, argument, context):
    from pyspark.sql import functions as F

    visible = DEFAULT_MASK_VISIBLE if argument is None else argument
    hidden = F.greatest(F.length(column) - F.lit(visible), F.lit(0))
    # Values of at most `visible` characters are shown whole, as the contract says.
    shown = F.substring(column, -visible, visible) if visible else F.lit("")
    return F.when(column.isNotNull(), F.concat(F.repeat(F.lit(MASK_CHARACTER), hidden), shown))


def _apply_redact(column, dtype, argument, context):
    from pyspark.sql import functions as F

    return F.when(column.isNotNull(), F.lit(REDACTED))


def _apply_scrub_text(column, dtype, argument, context):
    from pyspark.sql import functions as F

    for token, pattern in SCRUB_PATTERNS:
        column = F.regexp_replace(column, pattern, token)
    return column


def _parse_max_days(argument: str | None) -> int:
    days = _parse_count(argument)
    if days is None or not 1 <= days <= MAX_DATE_SHIFT_DAYS:
        raise RuleSyntaxError(f"needs the largest shift in days, 1 to {MAX_DATE_SHIFT_DAYS} (date_shift:30)")
    return days


def _apply_date_shift(column, dtype, argument, context):
    """Every date of one subject moves by the same offset in [-max, +max] days, so the
    intervals between a subject's events survive; the offset comes from a key derived
    for this purpose, so a published pseudonym does not reveal it."""
    from pyspark.sql import functions as F

    if context.date_shifter is None or context.subject is None:
        raise RuntimeError("date_shift needs the key and the subject; the enforce job supplies them")
    digest_head = F.conv(F.substring(context.date_shifter.hmac_hex(context.subject), 1, 12), 16, 10).cast("bigint")
    offset = (F.pmod(digest_head, F.lit(2 * argument + 1)) - F.lit(argument)).cast("int")
    if type_family(dtype) == "date":
        return F.date_add(column, offset)
    return F.timestamp_add("DAY", offset, column)


def _apply_encrypt(column, dtype, argument, context):
    if context.encryptor is None:
        raise RuntimeError("encrypt needs the encryption key; the enforce job supplies it")
    return context.encryptor.encrypt(column, context.column_name)


_PERIODS = ("year", "month", "day")


def _parse_generalize(argument: str | None) -> tuple[str, int | None]:
    if argument is None:
        raise RuleSyntaxError("needs one of year, month, day, prefixN, bucketN")
    if argument in _PERIODS:
        return (argument, None)
    match = re.fullmatch(r"(prefix|bucket)([1-9][0-9]*)", argument)
    if not match:
        raise RuleSyntaxError(f"unknown generalisation {argument!r}")
    kind, size = match.group(1), int(match.group(2))
    most = MAX_CHARACTERS if kind == "prefix" else MAX_BUCKET
    if size > most:
        # (A bucket past a long's range could not even be written as a Spark literal.)
        raise RuleSyntaxError(f"{argument!r}: {kind} at most {most}")
    return (kind, size)


def _generalize_text(argument: tuple[str, int | None]) -> str:
    kind, size = argument
    return kind if size is None else f"{kind}{size}"


def _apply_generalize(column, dtype, argument, context):
    from pyspark.sql import functions as F

    kind, size = argument
    family = type_family(dtype)
    if kind in _PERIODS:
        # date_trunc, not trunc, for dates too: trunc gives null below a week ("day").
        return F.date_trunc(kind, column).cast(dtype)
    if kind == "prefix":
        return F.substring(column, 1, size)
    # bucket: floor to a multiple of size, keeping the column's type.
    if family in INTEGRAL_TYPES:
        # In a wider type, and no lower than the type's least value: near it, the bucket
        # falls outside the type (-128 in buckets of 100 is -200), which ANSI casts refuse.
        wide = column.cast("decimal(38,0)")
        floored = wide - F.pmod(wide, F.lit(size).cast("decimal(38,0)"))
        least = F.lit(_LEAST_INTEGER[family]).cast("decimal(38,0)")
        return F.when(floored.isNotNull(), F.greatest(floored, least)).cast(dtype)  # greatest() skips nulls
    floored = (F.floor(column / F.lit(size)) * F.lit(size)).cast(dtype)
    if family in ("float", "double"):
        # floor() makes NaN 0.0: a missing measurement would read as a real zero.
        return F.when(F.isnan(column), column).otherwise(floored)
    return floored


_LEAST_INTEGER = {"tinyint": -(2**7), "smallint": -(2**15), "int": -(2**31), "bigint": -(2**63)}


def _describe_generalize(argument: tuple[str, int | None]) -> str:
    kind, size = argument
    if kind in _PERIODS:
        return f"generalised to its {kind}"
    if kind == "prefix":
        return f"generalised to its first {size} characters"
    return f"rounded down to a multiple of {size}"


def _generalize_fits(argument: tuple[str, int | None]) -> tuple[str, ...]:
    kind, _ = argument
    if kind in _PERIODS:
        return TEMPORAL_TYPES
    if kind == "prefix":
        return STRING_TYPES
    return NUMERIC_TYPES


RULES: dict[str, RuleSpec] = {
    spec.name: spec
    for spec in (
        RuleSpec("keep", _apply_keep, parse_argument=_no_argument, describe=lambda argument: "kept as it is"),
        RuleSpec("drop", _apply_drop, parse_argument=_no_argument, describe=lambda argument: "not published"),
        RuleSpec(
            "pseudonymize",
            _apply_pseudonymize,
            fits=lambda argument: STRING_TYPES + INTEGRAL_TYPES,
            parse_argument=_no_argument,
            describe=lambda argument: "pseudonymised (keyed HMAC-SHA256)",
            links_to_subject=True,
            publishes_text=True,
        ),
        RuleSpec(
            "mask",
            _apply_mask,
            fits=lambda argument: STRING_TYPES,
            parse_argument=_parse_count,
            describe=lambda argument: f"masked, only the last {4 if argument is None else argument} characters shown",
            links_to_subject=True,
        ),
        RuleSpec(
            "redact",
            _apply_redact,
            fits=lambda argument: STRING_TYPES,
            parse_argument=_no_argument,
            describe=lambda argument: f"replaced by {REDACTED}",
        ),
        RuleSpec(
            "generalize",
            _apply_generalize,
            fits=_generalize_fits,
            parse_argument=_parse_generalize,
            arg_text=_generalize_text,
            describe=_describe_generalize,
        ),
        RuleSpec(
            "date_shift",
            _apply_date_shift,
            fits=lambda argument: TEMPORAL_TYPES,
            parse_argument=_parse_max_days,
            describe=lambda argument: f"shifted by up to {argument} days, the same for all of one customer's rows",
            links_to_subject=True,
        ),
        RuleSpec(
            "encrypt",
            _apply_encrypt,
            fits=lambda argument: STRING_TYPES + INTEGRAL_TYPES,
            parse_argument=_no_argument,
            describe=lambda argument: "encrypted (AES-256-GCM), opened only by consentgate decrypt",
            links_to_subject=True,
            publishes_text=True,
            needs_encryption_key=True,
        ),
        RuleSpec(
            "scrub_text",
            _apply_scrub_text,
            fits=lambda argument: STRING_TYPES,
            parse_argument=_no_argument,
            describe=lambda argument: "e-mail addresses, card and phone numbers removed from the text",
        ),
    )
}


def parse_rule(text: object) -> ColumnRule:
    """Parse ``name`` or ``name:argument``; raises RuleSyntaxError naming what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise RuleSyntaxError(f"a rule must be a non-empty string, got {text!r}")
    name, _, argument = text.strip().partition(":")
    spec = RULES.get(name)
    if spec is None:
        raise RuleSyntaxError(f"unknown rule {name!r} (known: {', '.join(sorted(RULES))})")
    parsed = spec.parse_argument(argument or None) if spec.parse_argument else argument or None
    return ColumnRule(name=name, argument=parsed, spec=spec)
