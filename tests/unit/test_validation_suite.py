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


def retention_expectation(policy):
    totals = {"kept": 0, "anonymized": 0}
    suite = build_suite(policy, [policy.event_time], set(), totals, T)
    [consented] = [s for s in suite if s.slice_name == "consented"]
    [between] = [e for e in consented.expectations if isinstance(e, gxe.ExpectColumnValuesToBeBetween)]
    return between


def outcomes(spark, policy, times: dict) -> dict:
    """Whether the retention expectation passes a frame holding each of ``times`` alone."""
    expectation = retention_expectation(policy)
    source = gx.get_context(mode="ephemeral").data_sources.add_spark(name="frames")
    batches = source.add_dataframe_asset(name="orders").add_batch_definition_whole_dataframe("rows")
    passed = {}
    for name, at in times.items():
        frame = spark.createDataFrame([(at,)], "ordered_at timestamp")
        passed[name] = batches.get_batch(batch_parameters={"dataframe": frame}).validate(expectation).success
    return passed


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
