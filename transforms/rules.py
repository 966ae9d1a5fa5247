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

    from transforms.pseudonym import Pseudonymizer

STRING_TYPES = ("string", "varchar", "char")
INTEGRAL_TYPES = ("tinyint", "smallint", "int", "bigint")
NUMERIC_TYPES = INTEGRAL_TYPES + ("float", "double", "decimal")
TEMPORAL_TYPES = ("date", "timestamp", "timestamp_ntz")


def type_family(dtype: DataType) -> str:
    """The type's simple name without parameters: ``decimal(10,2)`` -> ``decimal``."""
    return dtype.simpleString().split("(")[0]


@dataclass(frozen=True)
class RuleContext:
    """What a rule may need beyond its column: the keyed pseudonymiser."""

    pseudonymizer: Pseudonymizer | None = None


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
    links_to_subject: bool = False  # may not appear in anonymised rows


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


def _apply_mask(column, dtype, argument, context):
    from pyspark.sql import functions as F

    visible = 4
    hidden = F.greatest(F.length(column) - F.lit(visible), F.lit(0))
    # Values of at most `visible` characters are shown whole, as the contract says.
    return F.concat(F.repeat(F.lit("*"), hidden), F.substring(column, -visible, visible))


_PERIODS = ("year", "month", "day")


def _parse_generalize(argument: str | None) -> tuple[str, int | None]:
    if argument is None:
        raise RuleSyntaxError("needs one of year, month, day, prefixN, bucketN")
    if argument in _PERIODS:
        return (argument, None)
    match = re.fullmatch(r"(prefix|bucket)([1-9][0-9]*)", argument)
    if not match:
        raise RuleSyntaxError(f"unknown generalisation {argument!r}")
    return (match.group(1), int(match.group(2)))


def _generalize_text(argument: tuple[str, int | None]) -> str:
    kind, size = argument
    return kind if size is None else f"{kind}{size}"


def _apply_generalize(column, dtype, argument, context):
    from pyspark.sql import functions as F

    kind, size = argument
    family = type_family(dtype)
    if kind in _PERIODS:
        if family == "date":
            return F.trunc(column, kind)
        return F.date_trunc(kind, column).cast(dtype)
    if kind == "prefix":
        return F.substring(column, 1, size)
    # bucket: floor to a multiple of size, keeping the column's type.
    if family in INTEGRAL_TYPES:
        return (column - F.pmod(column, F.lit(size))).cast(dtype)
    return (F.floor(column / F.lit(size)) * F.lit(size)).cast(dtype)


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
        RuleSpec("keep", _apply_keep, parse_argument=_no_argument),
        RuleSpec("drop", _apply_drop, parse_argument=_no_argument),
        RuleSpec(
            "pseudonymize",
            _apply_pseudonymize,
            fits=lambda argument: STRING_TYPES + INTEGRAL_TYPES,
            parse_argument=_no_argument,
            links_to_subject=True,
        ),
        RuleSpec(
            "mask", _apply_mask, fits=lambda argument: STRING_TYPES, parse_argument=_no_argument, links_to_subject=True
        ),
        RuleSpec(
            "generalize",
            _apply_generalize,
            fits=_generalize_fits,
            parse_argument=_parse_generalize,
            arg_text=_generalize_text,
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
