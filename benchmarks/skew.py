"""One customer with a million orders: the enforce job on a skewed input against the same
number of rows spread over a thousand customers, measured in one process.

A script, not a timed test. Both inputs are a generated lake's orders plus ``--extra``
orders of newly added customers who granted consent for analytics: in ``skewed`` all of
them belong to one customer, in ``spread`` to a thousand. It runs the real enforce job
(judgement, counts, rules, staged output) with the production Spark settings (adaptive
execution and its skew handling on), checks that every row is counted and every added
order is published as consented, and prints seconds per variant (median of --repeat,
interleaved, after a warm-up) and last one machine-readable line:

    skewed_vs_spread=1.10 extra_rows=1000000 rows=1200000 skewed_list_entries=1

Usage: .venv/bin/python benchmarks/skew.py [--extra 1000000] [--orders 200000] [--repeat 3]
(``bash scripts/bench.sh skew`` sets up the environment first).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

RUN_DATE = date(2026, 11, 28)
GRANTED_AT = datetime(2026, 1, 1, tzinfo=UTC)
ORDERED_AT = datetime(2026, 11, 20, tzinfo=UTC)
POLICY = Path(__file__).resolve().parents[1] / "dags" / "policies" / "orders.yml"


def add_consenting_customers(spark, lake, name: str, extra: int, customers: int) -> None:
    """``raw/<name>``: the orders plus ``extra`` orders of ``customers`` new customers."""
    from pyspark.sql import functions as F

    orders = spark.read.parquet(lake.raw("orders"))
    template = orders.limit(1).drop("order_id", "customer_id", "ordered_at")
    added = spark.range(extra).crossJoin(template)
    added = added.select(
        F.concat(F.lit(f"{name}-"), F.col("id").cast("string")).alias("order_id"),
        F.concat(F.lit(f"{name}-customer-"), (F.col("id") % customers).cast("string")).alias("customer_id"),
        F.lit(ORDERED_AT).alias("ordered_at"),
        *[c for c in orders.columns if c not in ("order_id", "customer_id", "ordered_at")],
    )
    orders.unionByName(added).write.mode("overwrite").parquet(lake.raw(name))
    grants = spark.range(customers).select(
        F.concat(F.lit(f"{name}-customer-"), F.col("id").cast("string")).alias("subject_id"),
        F.lit("analytics").alias("purpose"),
        F.lit("granted").alias("status"),
        F.lit(GRANTED_AT).alias("recorded_at"),
        F.lit(None).cast("timestamp").alias("expires_at"),
        F.lit("web_form").alias("source"),
    )
    grants.write.mode("append").parquet(lake.consent)


def enforce_once(spark, lake, policy, keys, name: str, run_id: str, extra: int) -> float:
    from pyspark.sql import functions as F

    from transforms.enforce import run_enforce

    started = time.perf_counter()
    result = run_enforce(spark, dataclasses.replace(policy, source=f"raw/{name}"), lake, RUN_DATE, run_id, keys)
    seconds = time.perf_counter() - started
    judged = sum(n for by_action in result.counts.values() for n in by_action.values())
    assert result.rows_in == judged, f"{name}: {result.rows_in} input rows, {judged} judged"
    staged = spark.read.parquet(result.staging_path).filter(F.col("order_id").startswith(f"{name}-"))
    published = staged.filter(F.col("record_state") == "consented").count()
    assert published == extra, f"{name}: {published} of {extra} added orders published as consented"
    return seconds


def list_entries_of_the_skewed_customer(spark, lake, policy) -> int:
    """How many entries the skewed customer's list of rows has in the subjects' states
    (``judgement_counts.SUBJECT_PERIOD_ROWS``): one per period it has rows in."""
    from pyspark.sql import functions as F

    from transforms.consent import SUBJECT
    from transforms.enforce import run_input, with_subject
    from transforms.judgement_counts import SUBJECT_PERIOD_ROWS, subject_period_rows
    from transforms.lake import judgement_instant
    from transforms.partitions import period_of

    rows = with_subject(run_input(spark.read.parquet(lake.raw("skewed")), policy, RUN_DATE), policy)
    rows = rows.filter(F.col(SUBJECT) == "skewed-customer-0")
    states = subject_period_rows(rows, SUBJECT, period_of(policy), policy, judgement_instant(RUN_DATE))
    return states.select(F.size(SUBJECT_PERIOD_ROWS)).first()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", type=int, default=1_000_000, help="orders added for the new customers")
    parser.add_argument("--orders", type=int, default=200_000, help="orders of the generated lake")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from transforms.generate import generate_lake
    from transforms.keys import RunKeys, SecretKey
    from transforms.lake import Lake
    from transforms.policy import load_policy
    from transforms.session import get_session

    lake = Lake.at(tempfile.mkdtemp(prefix="consentgate-skew-"))
    spark = get_session(
        lake,
        "consentgate-skew-benchmark",
    )
    spark.sparkContext.setLogLevel("ERROR")
    generate_lake(spark, lake, customers=args.customers, orders=args.orders, seed=42, run_date=RUN_DATE)
    variants = {"skewed": 1, "spread": 1000}
    for name, customers in variants.items():
        add_consenting_customers(spark, lake, name, args.extra, customers)
    rows = spark.read.parquet(lake.raw("skewed")).count()
    policy = load_policy(POLICY)
    keys = RunKeys(hmac=SecretKey(os.urandom(32), "bench", "benchmark"))

    entries = list_entries_of_the_skewed_customer(spark, lake, policy)
    enforce_once(spark, lake, policy, keys, "skewed", "warmup", args.extra)
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for attempt in range(args.repeat):
        for name in variants:
            seconds[name].append(enforce_once(spark, lake, policy, keys, name, f"{name}{attempt}", args.extra))
    median = {name: statistics.median(values) for name, values in seconds.items()}
    for name, value in median.items():
        runs = ", ".join(f"{v:.1f}" for v in seconds[name])
        print(f"{name:<7} {value:7.1f} s  ({runs})  x{value / median['spread']:.2f}")
    print(f"the skewed customer's list in the subjects' states: {entries} entries for {args.extra:,} orders")
    print(
        f"skewed_vs_spread={median['skewed'] / median['spread']:.2f} extra_rows={args.extra} rows={rows} "
        f"skewed_list_entries={entries}"
    )
    spark.stop()


if __name__ == "__main__":
    main()
