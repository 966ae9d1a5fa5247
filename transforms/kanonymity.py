"""k-anonymity among anonymised rows.

An anonymised row is published with the ``anonymized`` rules of the policy's
``quasi_identifiers`` applied (e.g. a zip prefix, a birth year, a month). Every
combination of those published values must be shared by the anonymised rows of at
least ``k_min`` different subjects in the run (people, not rows: one customer's ten
orders are one person); the rows of a smaller group are suppressed (dropped) with
reason ``k_anonymity_suppressed``, so no anonymised row stands out by its combination.
Nulls count as a value: two rows with a null zip prefix are in the same group.
"""

from __future__ import annotations

from functools import reduce

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from transforms.consent import SUBJECT
from transforms.policy import Policy
from transforms.reasons import ACTION, REASON, Action, Reason, action_code
from transforms.rules import RuleContext

_QUASI = "_cg_quasi_"
_SMALL = "_cg_small_group"


def quasi_identifier_values(judged: DataFrame, policy: Policy, context: RuleContext, sources: dict) -> DataFrame:
    """Adds each quasi-identifier as an anonymised row would publish it."""
    types = {field.name: field.dataType for field in judged.schema.fields}
    for index, name in enumerate(policy.quasi_identifiers):
        column = policy.column(name)
        value = sources.get(name, F.col(name))
        published = column.anonymized.apply(value, types[name], context.for_column(name))
        judged = judged.withColumn(f"{_QUASI}{index}", published)
    return judged


def suppress_small_groups(judged: DataFrame, policy: Policy) -> DataFrame:
    """Re-judges the anonymised rows of groups smaller than ``k_min``; needs the columns
    added by ``quasi_identifier_values`` and removes them."""
    quasi = [f"{_QUASI}{index}" for index in range(len(policy.quasi_identifiers))]
    anonymized = F.col(ACTION) == Action.ANONYMIZED.value
    small_groups = (
        judged.filter(anonymized)
        .groupBy(*quasi)
        .agg(F.countDistinct(SUBJECT).alias("subjects"))
        .filter(F.col("subjects") < policy.k_min)
        .select(*[F.col(q).alias(f"{q}_small") for q in quasi], F.lit(True).alias(_SMALL))
    )
    same_group = reduce(lambda a, b: a & b, [F.col(q).eqNullSafe(F.col(f"{q}_small")) for q in quasi])
    marked = judged.join(small_groups, same_group, "left")
    suppressed = anonymized & F.coalesce(F.col(_SMALL), F.lit(False))
    reason = F.when(suppressed, F.lit(Reason.K_ANONYMITY_SUPPRESSED.value)).otherwise(F.col(REASON))
    return (
        marked.withColumn(REASON, reason)
        .withColumn(ACTION, action_code(policy, F.col(REASON)))
        .drop(*quasi, *[f"{q}_small" for q in quasi], _SMALL)
    )
