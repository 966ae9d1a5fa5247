"""The expectations themselves, run by Great Expectations on tiny frames: each must pass
what the contract allows and fail what it forbids."""

from __future__ import annotations

import os
import time
from datetime import date, timedelta

import great_expectations as gx
import great_expectations.expectations as gxe
import pytest

from expectations.suite import build_suite
from tests.conftest import ORDERS_POLICY, REPO
from transforms.lake import judgement_instant
from transforms.policy import load_policy, parse_policy

T = judgement_instant(date(2026, 11, 28))
ACME_POLICY = REPO / "dags" / "policies" / "orders_to_acme_ads.yml"


@pytest.fixture
def process_zone(request):
    """The driver's local zone, which no judgement may depend on."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    yield request.param
    if saved is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = saved
    time.tzset()


def retention_expectation(policy, state="consented"):
    totals = {"kept": 0, "anonymized": 0}
    suite = build_suite(policy, [policy.event_time], set(), totals, T)
    [in_state] = [s for s in suite if s.slice_name == state]
    [between] = [e for e in in_state.expectations if isinstance(e, gxe.ExpectColumnValuesToBeBetween)]
    return between


def outcomes(spark, policy, times: dict, state="consented") -> dict:
    """Whether the retention expectation passes a frame holding each of ``times`` alone."""
    kind = "date" if all(type(at) is date for at in times.values()) else "timestamp"
    expectation = retention_expectation(policy, state)
    source = gx.get_context(mode="ephemeral").data_sources.add_spark(name="frames")
    batches = source.add_dataframe_asset(name="orders").add_batch_definition_whole_dataframe("rows")
    passed = {}
    for name, at in times.items():
        frame = spark.createDataFrame([(at,)], f"{policy.event_time} {kind}")
        passed[name] = batches.get_batch(batch_parameters={"dataframe": frame}).validate(expectation).success
    return passed


def test_anonymised_rows_are_held_to_the_retention_and_t_too(spark):
    """orders drops rows past the retention whatever their consent: an anonymised row of
    an expired month (its event time generalised to the month) is a leak too."""
    policy = load_policy(ORDERS_POLICY)
    cutoff = T - timedelta(days=policy.retention_days)
    month = cutoff.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    times = {"the cutoff's month": month, "the month before": (month - timedelta(days=1)).replace(day=1), "t": T}
    assert outcomes(spark, policy, times, "anonymized") == {
        "the cutoff's month": True,
        "the month before": False,
        "t": False,
    }


def test_without_a_retention_the_event_time_is_still_before_t(spark):
    """customers declares no retention: its rows are still judged before t only."""
    policy = load_policy(REPO / "dags" / "policies" / "customers.yml")
    times = {"long ago": date(1990, 1, 1), "the run date": date(2026, 11, 28), "t's day": T.date()}
    expected = {"long ago": True, "the run date": True, "t's day": False}  # t: the run date's end
    assert outcomes(spark, policy, times) == expected


HALF_HOUR = timedelta(minutes=30)


@pytest.mark.parametrize("process_zone", ["UTC", "America/Los_Angeles", "Pacific/Kiritimati"], indirect=True)
def test_the_retention_bounds_are_instants_whatever_the_drivers_zone(spark, process_zone):
    policy = load_policy(ORDERS_POLICY)
    retention = timedelta(days=policy.retention_days)
    times = {
        "just before t": T - HALF_HOUR,
        "just after t": T + HALF_HOUR,
        "just inside retention": T - retention + HALF_HOUR,
        "just past retention": T - retention - HALF_HOUR,
    }
    assert outcomes(spark, policy, times) == {
        "just before t": True,
        "just after t": False,
        "just inside retention": True,
        "just past retention": False,
    }


def test_a_generalised_event_time_is_held_to_the_period_holding_the_cutoff(spark):
    """The export publishes order days: the cutoff's own day passes, the day before not."""
    policy = load_policy(ACME_POLICY)
    cutoff = T - timedelta(days=policy.retention_days)
    day = timedelta(days=1)
    times = {"the cutoff's day": cutoff, "the day before": cutoff - day, "t's day": T, "the day before t": T - day}
    assert outcomes(spark, policy, times) == {
        "the cutoff's day": True,
        "the day before": False,
        "t's day": False,  # t is midnight: its day starts at t, after every judged row
        "the day before t": True,
    }


def test_only_rules_that_are_fixed_points_on_the_published_type_are_rechecked():
    from pyspark.sql.types import DateType, DoubleType, IntegerType, StringType, TimestampType

    from expectations.suite import rechecked_columns

    policy = load_policy(ORDERS_POLICY)
    published = {"birth_date": DateType(), "zip_code": StringType(), "ordered_at": TimestampType()}
    assert rechecked_columns(policy, published) == [
        ("consented", "birth_date"),
        ("anonymized", "zip_code"),
        ("anonymized", "ordered_at"),
    ]
    # Published as text (another state pseudonymises it): a period rule does not take text.
    assert rechecked_columns(policy, {"birth_date": StringType()}) == []
    amounts = parse_policy(
        {
            "dataset": "payments",
            "source": "raw/payments",
            "subject_key": "customer_id",
            "event_time": "paid_at",
            "purpose": "analytics",
            "columns": {
                "customer_id": {"consented": "pseudonymize", "anonymized": "drop"},
                "paid_at": {"rule": "keep"},
                "amount": {"consented": "keep", "anonymized": "generalize:bucket10"},
            },
        },
        "payments.yml",
    )
    assert rechecked_columns(amounts, {"amount": IntegerType()}) == [("anonymized", "amount")]
    assert rechecked_columns(amounts, {"amount": DoubleType()}) == []  # floor and cast may move it again


def test_a_policy_that_anonymises_nothing_publishes_no_anonymised_row():
    """A share (and any policy dropping rows without consent and past the retention) has
    no anonymised row to publish: one labelled so is a judgement gone wrong, whatever the
    enforce step counted."""
    from expectations.suite import publishable_states

    assert publishable_states(load_policy(ACME_POLICY)) == ["consented"]
    assert publishable_states(load_policy(ORDERS_POLICY)) == ["consented", "anonymized"]
    suite = build_suite(load_policy(ACME_POLICY), [], set(), {"kept": 1, "anonymized": 0}, T)
    [everything] = [s for s in suite if s.slice_name == "all"]
    in_set = [e for e in everything.expectations if isinstance(e, gxe.ExpectColumnValuesToBeInSet)]
    assert [e.value_set for e in in_set] == [["consented"]]


def test_a_masked_value_holding_a_line_break_is_still_a_masked_value(spark):
    from expectations.suite import mask_pattern

    source = gx.get_context(mode="ephemeral").data_sources.add_spark(name="frames")
    batches = source.add_dataframe_asset(name="phones").add_batch_definition_whole_dataframe("rows")
    expectation = gxe.ExpectColumnValuesToMatchRegex(column="phone", regex=mask_pattern(4))
    passed = {}
    for value in ("****4\n56", "12 34\n56"):
        frame = spark.createDataFrame([(value,)], "phone string")
        passed[value] = batches.get_batch(batch_parameters={"dataframe": frame}).validate(expectation).success
    assert passed == {"****4\n56": True, "12 34\n56": False}
