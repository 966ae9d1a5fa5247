"""What the anonymisation rules cost: the enforce job's judgement and column rules on a
generated lake, with the policy's rules, against the same job with ``keep`` everywhere.

A script, not a timed test. It prints each variant's seconds (median of --repeat runs,
interleaved, after one warm-up) and, last, one machine-readable line of ratios to the
keep-everywhere baseline measured in the same process:

    rules_vs_keep=1.21 kanon_vs_keep=1.35 rows=1000000

Usage: .venv/bin/python benchmarks/rules_cost.py [--orders 1000000] [--repeat 3]
(``bash scripts/bench.sh`` sets up the environment first).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import date

RUN_DATE = date(2026, 11, 28)
RULES = {
    "order_id": "keep",
    "customer_id": {"consented": "pseudonymize", "anonymized": "drop"},
    "email": {"consented": "encrypt", "anonymized": "drop"},
    "phone": {"consented": "mask:2", "anonymized": "drop"},
    "full_name": {"consented": "redact", "anonymized": "drop"},
    "street_address": {"consented": "scrub_text", "anonymized": "drop"},
    "birth_date": {"consented": "generalize:year", "anonymized": "drop"},
    "zip_code": {"consented": "keep", "anonymized": "generalize:prefix3"},
    "ordered_at": {"consented": "date_shift:30", "anonymized": "generalize:month"},
    "channel": "keep",
    "amount": {"consented": "keep", "anonymized": "generalize:bucket10"},
}


def policy_with(columns: dict, **extra):
    from transforms.policy import parse_policy

    raw = {
        "dataset": "orders",
        "source": "raw/orders",
        "subject_key": "customer_id",
        "event_time": "ordered_at",
        "purpose": "analytics",
        "retention_days": 730,
        "columns": columns,
        **extra,
    }
    return parse_policy(raw, "benchmark")


def enforce_once(spark, lake, policy, keys) -> float:
    """Judgement, k-anonymity, the counts and the column rules, written to Spark's no-op sink."""
    from pyspark import StorageLevel

    from transforms.enforce import judge, read_consent, rule_context, source_values, with_column_rules
    from transforms.kanonymity import quasi_identifier_values, suppress_small_groups
    from transforms.pseudonym import Pseudonymizer
    from transforms.reasons import ACTION, REASON

    started = time.perf_counter()
    # Read directly: the keep-everywhere baseline is not a policy the enforce job accepts.
    source = spark.read.parquet(lake.path(policy.source))
    pseudonymizer = Pseudonymizer(spark, keys.hmac)
    context = rule_context(spark, policy, keys, pseudonymizer)
    erased = spark.createDataFrame([], "_cg_subject_hash string")
    judged = judge(source, read_consent(spark, lake), erased, policy, RUN_DATE, pseudonymizer)
    if policy.quasi_identifiers:
        judged = quasi_identifier_values(judged, policy, context, source_values(policy))
    # As the enforce job did when this benchmark was written (it now counts while it
    # writes): the judged rows are kept, then counted and written. Each variant pays it alike.
    judged_rows = judged.persist(StorageLevel.MEMORY_AND_DISK)
    judged = suppress_small_groups(judged_rows, policy) if policy.quasi_identifiers else judged_rows
    judged.groupBy(REASON, ACTION).count().collect()
    with_column_rules(judged, policy, context).write.format("noop").mode("overwrite").save()
    judged_rows.unpersist()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--lake", help="an already generated lake (default: generate one in a temporary folder)")
    args = parser.parse_args()

    from transforms.generate import generate_lake
    from transforms.keys import RunKeys, SecretKey
    from transforms.lake import Lake
    from transforms.session import get_session

    lake = Lake.at(args.lake or tempfile.mkdtemp(prefix="consentgate-bench-"))
    spark = get_session(
        lake,
        "consentgate-benchmark",
    )
    spark.sparkContext.setLogLevel("ERROR")
    if not args.lake:
        started = time.perf_counter()
        generate_lake(spark, lake, customers=args.customers, orders=args.orders, seed=42, run_date=RUN_DATE)
        print(f"generated {args.orders} orders in {time.perf_counter() - started:.1f} s")
    rows = spark.read.parquet(lake.raw("orders")).count()
    keys = RunKeys(
        hmac=SecretKey(os.urandom(32), "bench", "benchmark"),
        encryption=SecretKey(os.urandom(32), "bench", "benchmark"),
    )
    variants = {
        # The subject key may not be kept in anonymised rows: dropping there is the cheapest rule.
        "keep": policy_with(
            {**{name: "keep" for name in RULES}, "customer_id": {"consented": "keep", "anonymized": "drop"}}
        ),
        "rules": policy_with(RULES),
        "rules+kanon": policy_with(RULES, quasi_identifiers=["zip_code", "ordered_at", "channel"], k_min=5),
    }
    enforce_once(spark, lake, variants["rules"], keys)  # warm-up: JIT, file listing caches
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeat):
        for name, policy in variants.items():
            seconds[name].append(enforce_once(spark, lake, policy, keys))
    median = {name: statistics.median(values) for name, values in seconds.items()}
    for name, value in median.items():
        runs = ", ".join(f"{v:.1f}" for v in seconds[name])
        print(f"{name:<12} {value:7.1f} s  ({runs})  x{value / median['keep']:.2f}")
    print(
        f"rules_vs_keep={median['rules'] / median['keep']:.2f} "
        f"kanon_vs_keep={median['rules+kanon'] / median['keep']:.2f} rows={rows}"
    )
    spark.stop()


if __name__ == "__main__":
    main()
