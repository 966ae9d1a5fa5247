"""Hypothesis-generated consent histories and datasets: the Spark judgement equals the
pure-Python reference model row by row, whatever the session time zone, the process
time zone, the row order and the number of partitions.

Histories are drawn on a coarse grid of instants around t so that ties, expiry exactly
at t, events after t and retention boundaries come up often.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from tests import reference
from tests.conftest import CONSENT_DDL, ORDERS_POLICY, RUN_DATE, SOURCE_DDL, T
from transforms.enforce import REASON, judge
from transforms.erasure import request_hashes
from transforms.keys import SecretKey
from transforms.policy import CheckConsentAt, SubjectKeyNormalization, load_policy
from transforms.pseudonym import Pseudonymizer

pytestmark = pytest.mark.integration

HOUR = timedelta(hours=1)

# Ids that normalise to the same subject (or to nothing) in different ways; "{ns}" keeps
# the histories of one batch apart without touching their edges.
SUBJECT_TEMPLATES = [
    "{ns}a", " {ns}a", "{ns}a\t", "{ns}A", "{ns}b", "{ns}Caf\u00e9", "{ns}Cafe\u0301 ", "\u00a0{ns}b",
    "\u2003{ns}b\u3000", "\x1f{ns}b",  # an em space and an ideographic space trim; U+001F does not
]  # fmt: skip
subject_ids = st.sampled_from([*SUBJECT_TEMPLATES, "", "  ", None])
# Instants: far in the past (beyond a 2-day retention), around t, exactly t, after t.
INSTANTS = [T - 100 * HOUR, T - 49 * HOUR, T - 48 * HOUR, T - 3 * HOUR, T - 2 * HOUR, T - HOUR, T, T + HOUR]
instants = st.sampled_from(INSTANTS)
# A missing time is one case among the instants, not half of all draws.
maybe_instants = st.sampled_from([*INSTANTS, None])


def events_of(subjects):
    return st.tuples(
        subjects,
        # The purpose mistyped ("Analytics "): it can refuse consent, never grant it.
        st.sampled_from(["analytics", "analytics", "marketing", " Analytics", "ANALYTICS\t"]),
        st.sampled_from(["granted", "granted", "withdrawn", "denied", "revoked", "Denied ", None]),
        maybe_instants,
        st.one_of(st.none(), st.just(T), instants),  # expiry exactly at t is the sharpest edge
        st.sampled_from(["web_form", "app", "gpc", " GPC"]),
    )


def histories_of(subjects, max_events: int, max_orders: int, max_erasures: int):
    """A consent log, erasure requests and a dataset drawn from one pool of subject ids."""
    return st.fixed_dictionaries(
        {
            "events": st.lists(events_of(subjects), max_size=max_events),
            "orders": st.lists(st.tuples(subjects, maybe_instants), min_size=1, max_size=max_orders),
            # Most histories have no erasure request: a request hides everything else.
            "erasures": st.one_of(st.just([]), st.lists(st.tuples(subjects, maybe_instants), max_size=max_erasures)),
        }
    )


# Half the examples are about one subject with a short history, where each edge decides
# more often; the others mix several subjects and ids that normalise alike.
histories = st.one_of(
    histories_of(st.sampled_from(["{ns}a", " {ns}a "]), max_events=3, max_orders=3, max_erasures=1),
    histories_of(subject_ids, max_events=10, max_orders=8, max_erasures=2),
)
# The policy options a history is judged under.
options = st.fixed_dictionaries(
    {
        "event_and_run": st.booleans(),
        "lower": st.booleans(),
        "retention_days": st.sampled_from([None, 2]),
        "sale_or_sharing": st.booleans(),
    }
)
# Zones move instants, so under far zones only the options that compare instants vary
# (a Spark job per combination costs about a second; case folding and GPC do not
# depend on the zone and are covered by the UTC run).
time_options = st.fixed_dictionaries(
    {
        "event_and_run": st.booleans(),
        "lower": st.just(False),
        "retention_days": st.sampled_from([None, 2]),
        "sale_or_sharing": st.just(False),
    }
)
# Examples cost almost nothing once drawn (one Spark job per combination of options).
EXAMPLES = int(os.environ.get("CONSENTGATE_PROPERTY_EXAMPLES", "500"))


def draw_examples(count: int, options=options) -> list[tuple[dict, dict]]:
    """``count`` hypothesis examples of (history, options), drawn without Spark.

    Starting a Spark job costs about a second and judging a few rows nothing, so the
    examples are drawn first and then judged together, one Spark job per combination of
    options; a mismatch is reported with the example's own history.
    """
    drawn: list[tuple[dict, dict]] = []

    @settings(max_examples=count, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(history=histories, chosen=options)
    def draw(history, chosen):
        drawn.append((history, chosen))

    draw()
    return drawn


def _in(namespace: str, subject: str | None) -> str | None:
    return None if subject is None else subject.format(ns=namespace)


def flatten(batch) -> dict[str, list]:
    """The batch's histories as one consent log, one erasure log and one dataset."""
    events, erasure_rows, rows = [], [], []
    for k, history in enumerate(batch["histories"]):
        ns = f"h{k}|"
        events += [(_in(ns, s), *rest) for s, *rest in history["events"]]
        erasure_rows += [(_in(ns, s), at) for s, at in history["erasures"]]
        rows += [(f"h{k}o{i}", _in(ns, s), at) for i, (s, at) in enumerate(history["orders"])]
    return {"events": events, "erasures": erasure_rows, "rows": rows}


def spark_reasons(spark, batch) -> dict[str, str]:
    policy = load_policy(ORDERS_POLICY)
    policy = replace(
        policy,
        check_consent_at=CheckConsentAt.EVENT_AND_RUN if batch["event_and_run"] else CheckConsentAt.RUN,
        subject_key_normalize=(SubjectKeyNormalization.LOWER,) if batch["lower"] else (),
        retention_days=batch["retention_days"],
        sale_or_sharing=batch["sale_or_sharing"],
    )
    flat = flatten(batch)
    source = spark.createDataFrame(flat["rows"], SOURCE_DDL).orderBy(F.rand(batch["shuffle_seed"]))
    source = source.repartition(batch["partitions"])
    consent = spark.createDataFrame(flat["events"], CONSENT_DDL).orderBy(F.rand(batch["shuffle_seed"] + 1))
    requests = spark.createDataFrame(flat["erasures"], "subject_id string, requested_at timestamp")
    pseudonymizer = Pseudonymizer(spark, SecretKey(b"property-test-key-0123", "1", "test"))
    erased = request_hashes(requests, policy, RUN_DATE, pseudonymizer)
    judged = judge(source, consent, erased, policy, RUN_DATE, pseudonymizer)
    return {r.order_id: r[REASON] for r in judged.select("order_id", REASON).collect()}


def reference_reasons(batch) -> dict[str, str]:
    """Each history judged on its own by the reference model."""
    expected = {}
    for k, history in enumerate(batch["histories"]):
        ref_events = [reference.Event(s, p, st_, rec, exp, src) for s, p, st_, rec, exp, src in history["events"]]
        erasure_rows = [(_in("", s), at) for s, at in history["erasures"]]
        ref_events = [replace(e, subject=_in("", e.subject)) for e in ref_events]
        for i, (subject, at) in enumerate(history["orders"]):
            if at is not None and at >= T:
                continue  # a later run's input
            expected[f"h{k}o{i}"] = reference.reason_for(
                _in("", subject),
                at,
                T,
                ref_events,
                erasure_rows,
                "analytics",
                batch["retention_days"],
                event_and_run=batch["event_and_run"],
                lower=batch["lower"],
                sale_or_sharing=batch["sale_or_sharing"],
            )
    return expected


@pytest.fixture(params=[("UTC", "UTC"), ("America/Los_Angeles", "Pacific/Kiritimati")], ids=["utc", "far_zones"])
def time_zones(request, spark):
    process_zone, session_zone = request.param
    saved_tz, saved_session = os.environ.get("TZ"), spark.conf.get("spark.sql.session.timeZone")
    os.environ["TZ"] = process_zone
    time.tzset()
    spark.conf.set("spark.sql.session.timeZone", session_zone)
    yield request.param
    spark.conf.set("spark.sql.session.timeZone", saved_session)
    if saved_tz is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = saved_tz
    time.tzset()


def test_spark_judgement_equals_the_reference_model(spark, time_zones):
    examples = draw_examples(EXAMPLES, options if time_zones == ("UTC", "UTC") else time_options)
    assert len(examples) >= min(EXAMPLES, 200)
    groups: dict[tuple, list[dict]] = {}
    for history, chosen in examples:
        groups.setdefault(tuple(sorted(chosen.items())), []).append(history)
    mismatches = []
    for number, (chosen, members) in enumerate(sorted(groups.items(), key=str)):
        # Row order and partitioning vary from one job to the next.
        batch = {"histories": members, **dict(chosen), "partitions": 1 + number % 3, "shuffle_seed": number}
        got, expected = spark_reasons(spark, batch), reference_reasons(batch)
        assert set(got) == set(expected)
        for order in sorted(o for o in expected if got[o] != expected[o]):
            history = members[int(order[1 : order.index("o")])]
            mismatches.append((order, got[order], expected[order], dict(chosen), history))
    assert not mismatches, mismatches[:3]
