"""How many rows got each reason and action: the judgement metrics, counted while the
output is written, or derived for each period from the subjects' states.

A row's reason depends on its subject's verdict and on three things of its own: whether
it has an event time, whether it is past retention at ``t``, and whether its TC string
refuses (``reasons.reason_from``). Listing those per subject, in the pass that finds the
subjects anyway, gives every period's metrics without judging the rows: what an
incremental run reports for the periods it takes over.
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from transforms.errors import StepStateError
from transforms.partitions import event_instant
from transforms.policy import Policy
from transforms.reasons import (
    ACTION,
    REASON,
    VERDICT,
    Action,
    Reason,
    action_code,
    action_for,
    past_retention,
    reason_from,
    tcf_refuses,
)

ERASED_FLAG = "_cg_is_erased"
# Per subject, one entry per period it has rows in (a null period for its rows without an
# event time): the period, its rows, how many of them are past retention and how many
# (not past retention) are refused by their TC string (``subject_period_rows``). Bounded
# by the periods however many rows: a customer with a million orders holds at most a
# few dozen entries, not a million.
SUBJECT_PERIOD_ROWS = "_cg_subject_period_rows"
_WITHHELD = "quarantined_erased"


def metric_name(reason: Reason, action: Action) -> str:
    return f"{reason}|{action}"


def metric_names() -> list[str]:
    """The names of ``judgement_metrics``, in the same order."""
    return [metric_name(reason, action) for reason in Reason for action in Action] + [_WITHHELD]


def judgement_metrics(weight: str | None = None) -> list[Column]:
    """One aggregate per (reason, action) pair, and the quarantined rows of erased
    subjects; over judged rows, or with ``weight`` over groups of that many alike rows."""

    def count(condition: str) -> Column:
        return F.expr(f"count_if({condition})" if weight is None else f"coalesce(sum(if({condition}, {weight}, 0)), 0)")

    # Written as SQL: built from Column objects, the 41 aggregates took about 3,000 Py4J
    # calls (close to a second per run) before Spark did any work.
    metrics = [
        count(f"{REASON} = '{reason.value}' AND {ACTION} = '{action.value}'").alias(metric_name(reason, action))
        for reason in Reason
        for action in Action
    ]
    withheld = count(f"{ACTION} = '{Action.QUARANTINED.value}' AND {ERASED_FLAG}")
    return [*metrics, withheld.alias(_WITHHELD)]


def counts_from_metrics(metrics: dict, policy: Policy) -> tuple[dict[str, dict[str, int]], int]:
    """``{reason: {action: n}}`` for every reason code, zeros included so reports compare,
    and the number of quarantined rows withheld because their subject is erased."""
    counts = {reason.value: {action_for(reason, policy).value: 0} for reason in Reason}
    for reason in Reason:
        for action in Action:
            n = int(metrics[metric_name(reason, action)])
            if n:
                counts[reason.value][action.value] = n
    return counts, int(metrics[_WITHHELD])


def sum_metrics(groups) -> dict[str, int]:
    """The judgement metrics of several groups added up."""
    names = metric_names()
    total = dict.fromkeys(names, 0)
    for group in groups:
        for name in names:
            total[name] += int(group[name])
    return total


def input_rows(metrics: dict) -> int:
    """How many input rows one group of judgement metrics counts (each has one reason)."""
    return sum(int(n) for name, n in metrics.items() if name != _WITHHELD)


def totals_by_action(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    totals = {action.value: 0 for action in Action}
    for by_action in counts.values():
        for action, n in by_action.items():
            totals[action] += n
    return totals


def published_by_state(metrics: dict, policy: Policy) -> dict[str, int]:
    """``{record_state: rows}`` that one group of judgement metrics publishes."""
    totals = totals_by_action(counts_from_metrics(metrics, policy)[0])
    published = {"consented": totals[Action.KEPT.value], "anonymized": totals[Action.ANONYMIZED.value]}
    return {state: n for state, n in published.items() if n}


def subject_period_rows(rows: DataFrame, subject: str, period: Column, policy: Policy, t: datetime) -> DataFrame:
    """One row per subject of ``rows`` with its ``SUBJECT_PERIOD_ROWS``: its rows counted
    per period first, so that a subject's list is bounded by its periods, not its rows."""
    late = past_retention(policy, t, event_instant(policy))
    per_period = rows.groupBy(subject, period.alias("period")).agg(
        F.count("*").alias("rows"),
        F.count_if(late).alias("past_retention"),
        F.count_if(~late & tcf_refuses(policy)).alias("refused_by_tcf"),
    )
    entry = F.struct("period", "rows", "past_retention", "refused_by_tcf")
    return per_period.groupBy(subject).agg(F.collect_list(entry).alias(SUBJECT_PERIOD_ROWS))


def periods_of(entries: Column) -> Column:
    """The sorted periods of a subject's ``SUBJECT_PERIOD_ROWS`` (rows without an event time have none)."""
    return F.array_sort(F.filter(entries["period"], lambda period: period.isNotNull()))


def metrics_by_period(states: DataFrame, input_rows: dict[str, int], policy: Policy, key) -> dict:
    """``{period: metrics}`` of every period of the input (``input_rows``: its rows by
    period), from the subjects' ``SUBJECT_PERIOD_ROWS`` and verdicts; rows not
    counted under a subject are the input's rows without one (``invalid_subject``).
    ``key`` names a period (``None`` for rows without an event time)."""
    entries = states.select(F.col(VERDICT).alias("verdict"), ERASED_FLAG, F.inline(SUBJECT_PERIOD_ROWS))
    # Added up per period and verdict first: a few hundred groups to judge, not a row per
    # subject and period.
    totals = entries.groupBy("period", "verdict", ERASED_FLAG).agg(
        *[F.sum(count).alias(count) for count in ("rows", "past_retention", "refused_by_tcf")]
    )

    def alike(late: bool, refused: bool, rows: Column) -> Column:
        return F.struct(F.lit(late).alias("late"), F.lit(refused).alias("refused"), rows.alias("n"))

    kinds = F.array(
        alike(True, False, F.col("past_retention")),
        alike(False, True, F.col("refused_by_tcf")),
        alike(False, False, F.col("rows") - F.col("past_retention") - F.col("refused_by_tcf")),
    )
    groups = totals.select("verdict", ERASED_FLAG, "period", F.explode(kinds).alias("k"))
    reason = reason_from(
        F.col("verdict"), F.lit(True), F.col("period").isNotNull(), F.col("k.late"), F.col("k.refused")
    )
    judged = groups.select("period", ERASED_FLAG, F.col("k.n").alias("n"), reason.alias(REASON))
    judged = judged.withColumn(ACTION, action_code(policy, F.col(REASON)))
    derived = {
        key(row["period"]): row.asDict() for row in judged.groupBy("period").agg(*judgement_metrics("n")).collect()
    }

    unknown = metric_name(Reason.INVALID_SUBJECT, Action.QUARANTINED)
    if set(derived) - set(input_rows):
        raise StepStateError("the subjects' rows fall in periods the input count does not have")
    names = metric_names()
    by_period = {}
    for period, rows in input_rows.items():
        metrics = {name: int(derived.get(period, {}).get(name, 0)) for name in names}
        without_subject = rows - sum(metrics[name] for name in names if name != _WITHHELD)
        if without_subject < 0:
            raise StepStateError(f"period {period}: more rows counted under subjects than the input has")
        metrics[unknown] += without_subject
        by_period[period] = metrics
    return by_period
