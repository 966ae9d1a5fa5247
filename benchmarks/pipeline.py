"""The pipeline against the engine's floor, from one process and one run: a plain Spark
copy of the input (the floor), the bare consent join, consentgate's enforce job, the
same judgement with the column rules as Python UDFs, and validation, each in seconds
and as a ratio to the copy, plus the driver's peak memory.

A script, not a timed test. Its last line is machine-readable:

    enforce_vs_copy=1.42 udf_speedup=2.3 validate_vs_enforce=0.31 incremental_vs_full=0.09 rows=5000000 ...

``udf_speedup`` compares like with like: the enforce job's main pass (the judgement and
the column rules, sorted and written to Parquet), once with Spark's built-in functions
(what the job uses) and once with the rules as row-at-a-time Python UDFs.
``incremental_vs_full`` is the enforce job after 1% of the customers withdrew (recorded
before ``t``, against the version the first run published) over a full recomputation of
the same input right after it (``full_again``: as warm a JVM, where the first run also
paid for warming it up); it is incremental when enough periods can be reused, full
otherwise (the report's reason is printed). ``next_day_vs_full`` is the run of the next
day (the generated consent log has events after ``t``) and ``rerun_vs_full`` a rerun at
the same ``t``, both over the first, full, enforce; ``rerun_vs_full_again`` is the rerun
over ``full_again``, and ``one_customer_vs_full_again`` the run after one customer
withdrew (the months of that customer's orders judged again, and only their source
files read). With several sizes, the last
line also gives how enforce's time grew from the second-largest size to the largest.

Usage: .venv/bin/python benchmarks/pipeline.py [--orders 1000000,5000000,20000000] [--driver-memory 2g] [--scaling]
(``--scaling`` times only the copy, the first enforce run and its validation of each size; the first
size's enforce is also the process's first and warms the JVM up, so give a smaller size
first when the growth between the last two is what counts)
(several sizes run one after the other in the same process; each size's lake is
generated in a temporary folder and removed after it is measured)
(``bash scripts/bench.sh pipeline`` sets up the environment first).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import resource
import shutil
import tempfile
import threading
import time
from datetime import date, timedelta

RUN_DATE = date(2026, 11, 28)
POLICY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "dags", "policies", "orders.yml")


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def plain_copy(spark, lake, out: str) -> None:
    spark.read.parquet(lake.raw("orders")).write.mode("overwrite").parquet(out)


def bare_consent_join(spark, lake, out: str) -> None:
    """Every order with its customer's latest analytics event: the join without the rules."""
    from pyspark.sql import functions as F

    consent = spark.read.parquet(lake.consent).filter(F.col("purpose") == "analytics")
    latest = consent.groupBy(F.trim("subject_id").alias("customer_id")).agg(
        F.max_by("status", "recorded_at").alias("status")
    )
    orders = spark.read.parquet(lake.raw("orders"))
    orders.join(latest, "customer_id", "left").write.mode("overwrite").parquet(out)


def withdraw(spark, lake, one_in: int | None) -> int:
    """One customer with orders in ``one_in`` (or one customer alone, with None) withdraws
    from analytics an hour before ``t``."""
    from pyspark.sql import functions as F

    from transforms.consent import instant
    from transforms.lake import judgement_instant

    consent = spark.read.parquet(lake.consent)
    customers = spark.read.parquet(lake.raw("orders")).select(F.trim("customer_id").alias("subject_id")).distinct()
    if one_in is None:
        chosen = customers.orderBy(F.xxhash64("subject_id")).limit(1).cache()
    else:
        chosen = customers.filter(F.pmod(F.xxhash64("subject_id"), F.lit(one_in)) == 0).cache()
    withdrawals = chosen.select(
        "subject_id",
        F.lit("analytics").alias("purpose"),
        F.lit("withdrawn").alias("status"),
        instant(judgement_instant(RUN_DATE) - timedelta(hours=1)).alias("recorded_at"),
        F.lit(None).cast("timestamp").alias("expires_at"),
        F.lit("app").alias("source"),
    ).select(*consent.columns)
    withdrawals.write.mode("append").parquet(lake.consent)
    n = chosen.count()
    chosen.unpersist()
    return n


def udf_rules(policy, key: bytes):
    """The policy's column rules as Python UDFs (the rules the shipped orders policy uses)."""
    from datetime import datetime

    from pyspark.sql import functions as F

    def pseudonymize(value):
        return None if value is None else hmac.new(key, str(value).encode("utf-8"), hashlib.sha256).hexdigest()

    def mask(value, shown=4):
        return None if value is None else "*" * max(len(value) - shown, 0) + value[-shown:]

    def truncate(value, unit):
        if value is None:
            return None
        if unit == "year":
            return value.replace(month=1, day=1) if not isinstance(value, datetime) else datetime(value.year, 1, 1)
        if isinstance(value, datetime):
            return (
                datetime(value.year, value.month, 1)
                if unit == "month"
                else datetime(value.year, value.month, value.day)
            )
        return value.replace(day=1) if unit == "month" else value

    def prefix(value, n):
        return None if value is None else value[:n]

    def as_udf(rule, dtype: str):
        if rule.name == "pseudonymize":
            return F.udf(pseudonymize, "string")
        if rule.name == "mask":
            return F.udf(lambda v, n=rule.argument or 4: mask(v, n), "string")
        if rule.name == "generalize" and rule.argument in ("year", "month", "day"):
            return F.udf(lambda v, u=rule.argument: truncate(v, u), dtype)
        if rule.name == "generalize" and str(rule.argument).startswith("prefix"):
            return F.udf(lambda v, n=int(str(rule.argument)[6:]): prefix(v, n), "string")
        return None

    return as_udf


def rules_core(spark, lake, policy, keys, out: str, with_udfs: bool) -> None:
    """The enforce job's main pass (judgement, column rules, Parquet) with the rules either
    as the job applies them (built-in functions) or as Python UDFs."""
    from pyspark.sql import functions as F

    from transforms.consent import SUBJECT
    from transforms.enforce import cached_subject_states, judge, read_consent, rule_context, with_column_rules
    from transforms.policy import STATE_COLUMN
    from transforms.pseudonym import Pseudonymizer
    from transforms.reasons import ACTION, Action

    source = spark.read.parquet(lake.path(policy.source))
    pseudonymizer = Pseudonymizer(spark, keys.hmac)
    erased = spark.createDataFrame([], "_cg_subject_hash string")
    consent = read_consent(spark, lake)
    # As the job does: the subjects' states cached and counted, so the join is sized on them.
    states, subjects = cached_subject_states(source, consent, erased, policy, RUN_DATE, pseudonymizer)
    judged = judge(source, consent, erased, policy, RUN_DATE, pseudonymizer, states=states, subjects=subjects)
    if not with_udfs:
        output = with_column_rules(judged, policy, rule_context(spark, policy, keys, pseudonymizer))
    else:
        as_udf = udf_rules(policy, keys.hmac.material)
        types = dict(judged.dtypes)
        state = F.when(F.col(ACTION) == Action.KEPT.value, "consented").otherwise("anonymized")
        published = judged.filter(F.col(ACTION).isin(Action.KEPT.value, Action.ANONYMIZED.value))
        selected = []
        for column in policy.output_columns:
            value = F.col(SUBJECT) if column.name == policy.subject_key else F.col(column.name)
            by_state = []
            for rule in (column.consented, column.anonymized):
                udf = as_udf(rule, types[column.name])
                if udf is not None:
                    by_state.append(udf(value))
                elif rule.removes_value:
                    by_state.append(F.lit(None))
                else:
                    by_state.append(value)  # keep
            selected.append(F.when(state == "consented", by_state[0]).otherwise(by_state[1]).alias(column.name))
        output = published.select(*selected, state.alias(STATE_COLUMN))
    output.sortWithinPartitions(*output.columns).write.mode("overwrite").parquet(out)
    states.unpersist()


class HeapSampler:
    """The driver JVM's used heap, sampled every half second from a thread of its own:
    its peak is what the driver really held (GC pools peak at different moments, so
    adding their own peaks overstates it)."""

    def __init__(self, spark):
        self.runtime = spark.sparkContext._jvm.java.lang.Runtime.getRuntime()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, self.runtime.totalMemory() - self.runtime.freeMemory())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20

    @property
    def max_mb(self) -> float:
        return self.runtime.maxMemory() / 2**20


def print_seconds_and_memory(seconds: dict, heap: HeapSampler, driver_memory: str) -> None:
    for name, value in seconds.items():
        print(f"{name:<14} {value:8.1f} s  x{value / seconds['copy']:.2f} of the copy")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"peak driver memory: JVM heap {heap.peak_mb:.0f} of {heap.max_mb:.0f} MiB used "
        f"(spark.driver.memory={driver_memory}), Python {rss:.0f} MiB"
    )


def scaling_result(rows: int, seconds: dict, heap: HeapSampler, driver_memory: str) -> dict:
    """What ``--scaling`` measures of one size: the first enforce against the copy, its
    validation against it, and the heap."""
    print_seconds_and_memory(seconds, heap, driver_memory)
    line = (
        f"enforce_vs_copy={seconds['enforce'] / seconds['copy']:.2f} "
        f"validate_vs_enforce={seconds['validate'] / seconds['enforce']:.2f} rows={rows} "
        f"peak_heap_mb={heap.peak_mb:.0f}"
    )
    print(line, flush=True)
    return {"rows": rows, "seconds": seconds, "line": line}


def measure(
    spark, lake, orders: int, customers: int | None, generate: bool, driver_memory: str, scaling: bool = False
) -> dict:
    """One size: the lake generated (unless given), then each stage timed once (with
    ``scaling``, only the copy, the first, full, enforce run and its validation)."""
    from transforms.enforce import run_enforce
    from transforms.generate import generate_lake
    from transforms.keys import RunKeys, SecretKey
    from transforms.policy import load_policy
    from transforms.publish import run_publish
    from transforms.report_html import incremental_summary
    from transforms.storage import read_json
    from transforms.validate import run_validate

    if generate:
        customers = customers or max(orders // 10, 100)
        seconds = timed(
            lambda: generate_lake(spark, lake, customers=customers, orders=orders, seed=42, run_date=RUN_DATE)
        )
        print(f"generated {orders} orders of {customers} customers in {seconds:.1f} s", flush=True)
    rows = spark.read.parquet(lake.raw("orders")).count()
    policy = load_policy(POLICY)
    # A fixed key (synthetic data): a lake reused with --lake holds tombstones made with it.
    key = SecretKey(hashlib.sha256(b"consentgate benchmark key").digest(), "bench", "benchmark")
    keys = RunKeys(hmac=key)
    out = lake.path("_benchmark")

    plain_copy(spark, lake, f"{out}/warm-up")  # JIT and file listing, counted nowhere
    with HeapSampler(spark) as heap:
        if scaling:
            seconds = {
                "copy": timed(lambda: plain_copy(spark, lake, f"{out}/copy")),
                "enforce": timed(lambda: run_enforce(spark, policy, lake, RUN_DATE, "bench", keys)),
                "validate": timed(lambda: run_validate(spark, policy, lake, "bench", key)),
            }
            return scaling_result(rows, seconds, heap, driver_memory)
        seconds = {
            "copy": timed(lambda: plain_copy(spark, lake, f"{out}/copy")),
            "consent_join": timed(lambda: bare_consent_join(spark, lake, f"{out}/join")),
            "enforce": timed(lambda: run_enforce(spark, policy, lake, RUN_DATE, "bench", keys)),
            "validate": timed(lambda: run_validate(spark, policy, lake, "bench", key)),
            "publish": timed(lambda: run_publish(spark, policy, lake, "bench")),
            "next_day": timed(lambda: run_enforce(spark, policy, lake, RUN_DATE + timedelta(days=1), "next", keys)),
            "rerun": timed(lambda: run_enforce(spark, policy, lake, RUN_DATE, "rerun", keys)),
            "rules_builtin": timed(lambda: rules_core(spark, lake, policy, keys, f"{out}/builtin", with_udfs=False)),
            "rules_udf": timed(lambda: rules_core(spark, lake, policy, keys, f"{out}/udf", with_udfs=True)),
        }
        withdraw(spark, lake, None)
        seconds["one_customer"] = timed(lambda: run_enforce(spark, policy, lake, RUN_DATE, "one-customer", keys))
        withdrawn = withdraw(spark, lake, 100)
        seconds["incremental"] = timed(lambda: run_enforce(spark, policy, lake, RUN_DATE, "one-percent", keys))
        # The same input judged in full, as warm as the run above: the recomputation an
        # incremental run is measured against (the first run above also warms the JVM up).
        seconds["full_again"] = timed(
            lambda: run_enforce(spark, policy, lake, RUN_DATE, "one-percent-full", keys, full=True)
        )
    for name, run_id in (
        ("next day", "next"),
        ("rerun", "rerun"),
        ("one customer withdrew", "one-customer"),
        (f"{withdrawn} customers withdrew", "one-percent"),
    ):
        plan = read_json(lake.step_state(policy.dataset, run_id, "enforce"))["incremental"]
        print(f"{name}: {incremental_summary(plan)}")
    print_seconds_and_memory(seconds, heap, driver_memory)
    line = (
        f"enforce_vs_copy={seconds['enforce'] / seconds['copy']:.2f} "
        f"udf_speedup={seconds['rules_udf'] / seconds['rules_builtin']:.2f} "
        f"validate_vs_enforce={seconds['validate'] / seconds['enforce']:.2f} "
        f"incremental_vs_full={seconds['incremental'] / seconds['full_again']:.2f} rows={rows} "
        f"next_day_vs_full={seconds['next_day'] / seconds['enforce']:.2f} "
        f"rerun_vs_full={seconds['rerun'] / seconds['enforce']:.2f} "
        f"rerun_vs_full_again={seconds['rerun'] / seconds['full_again']:.2f} "
        f"one_customer_vs_full_again={seconds['one_customer'] / seconds['full_again']:.2f} "
        f"peak_heap_mb={heap.peak_mb:.0f}"
    )
    print(line, flush=True)
    return {"rows": rows, "seconds": seconds, "line": line}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", default="1000000", help="one size or several, e.g. 1000000,5000000,20000000")
    parser.add_argument("--customers", type=int, help="default: one per ten orders")
    parser.add_argument("--driver-memory", default="2g")
    parser.add_argument("--lake", help="an already generated lake (default: generate one per size, then remove it)")
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="time only the copy, the first enforce run and its validation of each size (how they grow, and the "
        "driver's heap); "
        "the first size also warms the JVM up",
    )
    args = parser.parse_args()
    sizes = sorted(int(n) for n in args.orders.split(","))
    if args.lake and len(sizes) > 1:
        parser.error("--lake holds one lake: give one size, or none")

    os.environ.setdefault("CONSENTGATE_DATA_DOCS", "off")
    from transforms.lake import Lake
    from transforms.session import get_session

    base = args.lake or tempfile.mkdtemp(prefix="consentgate-bench-")
    spark = get_session(
        Lake.at(base),
        "consentgate-benchmark",
        extra_conf={"spark.driver.memory": args.driver_memory},
    )
    spark.sparkContext.setLogLevel("ERROR")
    results = []
    for orders in sizes:
        print(f"== {orders} orders", flush=True)
        lake = Lake.at(base if args.lake else os.path.join(base, str(orders)))
        results.append(measure(spark, lake, orders, args.customers, not args.lake, args.driver_memory, args.scaling))
        if not args.lake:
            shutil.rmtree(lake.root, ignore_errors=True)
    line = results[-1]["line"]
    if len(results) > 1:
        # How enforce's time grows from the second-largest size to the largest (linear: the ratio of sizes).
        previous, largest = results[-2], results[-1]
        growth = largest["seconds"]["enforce"] / previous["seconds"]["enforce"]
        line += f" enforce_time_{largest['rows']}_vs_{previous['rows']}={growth:.2f}"
    print(line)
    spark.stop()
    if not args.lake:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
