"""Each period's reason counts derived from the subjects' lists of alike rows (what an
incremental run reports for the periods it takes over) equal those of the rows judged
one by one, on a hand-written input with every reason a partitioned dataset can give."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime

import pytest

from tests.conftest import CONSENT_DDL, ORDERS_POLICY, RUN_DATE
from tests.unit.test_tcf import encode_tc_string
from transforms.consent import SUBJECT
from transforms.enforce import judge, run_input, subject_states, with_subject
from transforms.erasure import request_hashes
from transforms.incremental import PERIOD, period_key
from transforms.judgement_counts import SUBJECT_PERIOD_ROWS, counts_from_metrics, judgement_metrics, metrics_by_period
from transforms.keys import SecretKey
from transforms.partitions import period_of
from transforms.policy import TcfMapping, load_policy
from transforms.pseudonym import Pseudonymizer

ALLOWS, REFUSES = encode_tc_string({1, 7}), encode_tc_string({1})
NOV, OCT, OLD = datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 10, 5, tzinfo=UTC), datetime(2024, 1, 10, tzinfo=UTC)
BEFORE_1970 = datetime(1969, 7, 20, 20, 17, tzinfo=UTC)
ROWS = [
    ("o1", "c1", NOV, ALLOWS),  # consented
    ("o2", "c1", NOV, REFUSES),  # no_consent: the TC string refuses
    ("o3", "c1", OLD, ALLOWS),  # retention_expired (730 days)
    ("o4", " c1", OLD, REFUSES),  # retention_expired comes before the TC string
    ("o5", "c1", None, ALLOWS),  # invalid_event_time
    ("o6", "c2", OCT, ALLOWS),  # withdrawn
    ("o7", "c3", OCT, ALLOWS),  # erased
    ("o8", "c3", None, ALLOWS),  # invalid_event_time, withheld (erased subject)
    ("o9", None, OCT, ALLOWS),  # invalid_subject
    ("o10", "  ", None, ALLOWS),  # invalid_subject, no event time either
    ("o11", "c4", NOV, ALLOWS),  # no_consent: no event in the log
    ("o12", "c4", datetime(2026, 12, 1, tzinfo=UTC), ALLOWS),  # after t: not this run's input
    ("o13", "c1", NOV, ALLOWS),  # consented: one entry counts c1's three November rows
    ("o14", "c3", None, ALLOWS),  # invalid_event_time, withheld, as o8
    ("o15", "c5", OCT, ALLOWS),  # consent_expired
    ("o16", "c1", BEFORE_1970, ALLOWS),  # retention_expired; a period before 1970
]
# By retention_days: 730 (the shipped policy), or none (rows are kept however old).
EXPECTED = {
    730: {
        "2026-11-01": {"consented": 2, "no_consent": 2},
        "2024-01-01": {"retention_expired": 2},
        "1969-07-01": {"retention_expired": 1},
        "2026-10-01": {"withdrawn": 1, "erased": 1, "invalid_subject": 1, "consent_expired": 1},
        "none": {"invalid_event_time": 3, "invalid_subject": 1},
    },
    None: {
        "2026-11-01": {"consented": 2, "no_consent": 2},
        "2024-01-01": {"consented": 1, "no_consent": 1},
        "1969-07-01": {"consented": 1},
        "2026-10-01": {"withdrawn": 1, "erased": 1, "invalid_subject": 1, "consent_expired": 1},
        "none": {"invalid_event_time": 3, "invalid_subject": 1},
    },
}


def reasons_of(metrics: dict, policy) -> dict[str, int]:
    counts, _ = counts_from_metrics(metrics, policy)
    return {reason: sum(by_action.values()) for reason, by_action in counts.items() if sum(by_action.values())}


@pytest.mark.parametrize("retention_days", [730, None], ids=["retention_730_days", "no_retention"])
def test_counts_derived_per_period_equal_the_judged_rows(spark, retention_days):
    policy = load_policy(ORDERS_POLICY)
    tcf = TcfMapping(column="tc", purposes=(1, 7))
    policy = type(policy)(**{**policy.__dict__, "tcf": tcf, "retention_days": retention_days})
    source = spark.createDataFrame(ROWS, "order_id string, customer_id string, ordered_at timestamp, tc string")
    granted = datetime(2026, 6, 1, tzinfo=UTC)
    consent = spark.createDataFrame(
        [
            ("c1", "analytics", "granted", granted, None, "web_form"),
            ("c2", "analytics", "granted", granted, None, "web_form"),
            ("c2", "analytics", "withdrawn", datetime(2026, 11, 1, tzinfo=UTC), None, "app"),
            ("c3", "analytics", "granted", granted, None, "web_form"),
            ("c5", "analytics", "granted", granted, datetime(2026, 11, 15, tzinfo=UTC), "web_form"),
        ],
        CONSENT_DDL,
    )
    requests = spark.createDataFrame(
        [("c3", datetime(2026, 11, 2, tzinfo=UTC))], "subject_id string, requested_at timestamp"
    )
    pseudonymizer = Pseudonymizer(spark, SecretKey(b"judgement-counts-test-key", "1", "test"))
    erased = request_hashes(requests, policy, RUN_DATE, pseudonymizer)

    rows = with_subject(run_input(source, policy, RUN_DATE), policy)
    states = subject_states(rows, consent, erased, policy, RUN_DATE, pseudonymizer, with_periods=True)
    input_rows = Counter(period_key(r[0]) for r in rows.select(period_of(policy)).collect())
    derived = metrics_by_period(states, dict(input_rows), policy, period_key)

    judged = judge(source, consent, erased, policy, RUN_DATE, pseudonymizer).withColumn(PERIOD, period_of(policy))
    one_by_one = {
        period_key(row[PERIOD]): {name: int(n) for name, n in row.asDict().items() if name != PERIOD}
        for row in judged.groupBy(PERIOD).agg(*judgement_metrics()).collect()
    }
    assert derived == one_by_one
    assert {period: reasons_of(metrics, policy) for period, metrics in derived.items()} == EXPECTED[retention_days]
    assert derived["none"]["quarantined_erased"] == 2 and derived["2026-10-01"]["quarantined_erased"] == 0

    # A subject's rows of one period are one entry with their numbers: (rows, past
    # retention, refused by the TC string and not past retention); None for no event time.
    if retention_days is None:
        old_rows = {date(2024, 1, 1): (2, 0, 1), date(1969, 7, 1): (1, 0, 0)}
    else:  # past retention, the TC string is not looked at
        old_rows = {date(2024, 1, 1): (2, 2, 0), date(1969, 7, 1): (1, 1, 0)}
    entries = {
        r[SUBJECT]: {e["period"]: (e["rows"], e["past_retention"], e["refused_by_tcf"]) for e in r[SUBJECT_PERIOD_ROWS]}
        for r in states.collect()
    }
    assert entries["c1"] == {None: (1, 0, 0), date(2026, 11, 1): (3, 0, 1), **old_rows}
    assert entries["c3"] == {None: (2, 0, 0), date(2026, 10, 1): (1, 0, 0)}
