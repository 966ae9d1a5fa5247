"""A synthetic lake for tests and demos: customers, orders, the consent log and erasure
requests, deterministic for a seed.

Faker supplies realistic value pools (names, e-mail domains, post codes, product
words); Spark assembles the rows from ``range`` and keyed hashes, so ten million
orders never pass through Python lists. The consent histories cover every case of the
contract; each customer's case is ``scenario_of`` (exposed for tests and demos).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from faker import Faker
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from transforms.consent import instant
from transforms.lake import Lake, judgement_instant

DEFAULT_RUN_DATE = date(2026, 11, 28)
POOL_SIZE = 500
MICROS_PER_DAY = 86_400 * 1_000_000

# The purpose of the shipped share policy (dags/policies/orders_to_acme_ads.yml).
SHARE_PURPOSE = "share:acme_ads"
# Consent scenarios: (name, share of customers in percent). Order matters: a customer's
# bucket (0-99) falls into the scenario whose cumulative share first exceeds it.
SCENARIOS = (
    ("granted", 35),
    ("withdrawn", 10),
    ("regranted", 5),
    ("expired", 5),
    ("expiring_later", 5),
    ("expires_at_t", 3),
    ("gpc_denied", 5),
    ("other_purpose_only", 5),
    ("tie_grant_and_withdrawal", 3),
    ("granted_after_t", 3),
    ("withdrawn_after_t", 3),
    ("no_consent", 18),
)
assert sum(share for _, share in SCENARIOS) == 100


@dataclass(frozen=True)
class GeneratedLake:
    customers: int
    orders: int
    consent_events: int
    erasure_requests: int


def _hash(seed: int, salt: str, *columns: Column) -> Column:
    return F.xxhash64(F.lit(seed), F.lit(salt), *columns)


def _pick(seed: int, salt: str, n: int, *columns: Column) -> Column:
    """A deterministic index in [0, n) for the row."""
    return F.pmod(_hash(seed, salt, *columns), F.lit(n)).cast("int")


def _sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _from_pool(pool: list[str], index: Column) -> Column:
    # One SQL array literal: a Column per value took a Py4J call each (about 2 s per lake).
    return F.element_at(F.expr(f"array({', '.join(map(_sql_string, pool))})"), index + 1)


def _pools(seed: int) -> dict[str, list[str]]:
    fake = Faker("en_US")
    fake.seed_instance(seed)
    unique = fake.unique
    return {
        "first": [unique.first_name() for _ in range(POOL_SIZE)],
        "last": [unique.last_name() for _ in range(POOL_SIZE)],
        "domain": [fake.free_email_domain() for _ in range(20)],
        "zip": [fake.postcode() for _ in range(POOL_SIZE)],
        "street": [fake.street_address() for _ in range(POOL_SIZE)],
        "category": sorted({fake.word().lower() for _ in range(40)}),
    }


def customer_id(index: Column) -> Column:
    return F.format_string("C%07d", index)


def scenario_of(seed: int, customer: Column) -> Column:
    """The consent scenario name of a customer id column."""
    bucket = _pick(seed, "scenario", 100, customer)
    expr = None
    upper = 0
    for name, share in SCENARIOS:
        upper += share
        expr = F.when(bucket < upper, F.lit(name)) if expr is None else expr.when(bucket < upper, F.lit(name))
    return expr


def build_customers(spark: SparkSession, seed: int, count: int, pools: dict[str, list[str]]) -> DataFrame:
    ids = spark.range(1, count + 1, numPartitions=max(1, min(8, count // 50_000 + 1)))
    idx = F.col("id")
    first = _from_pool(pools["first"], _pick(seed, "first", len(pools["first"]), idx))
    last = _from_pool(pools["last"], _pick(seed, "last", len(pools["last"]), idx))
    domain = _from_pool(pools["domain"], _pick(seed, "domain", len(pools["domain"]), idx))
    local_part = F.regexp_replace(F.lower(F.concat_ws(".", first, last)), "[^a-z.]", "")
    return ids.select(
        customer_id(idx).alias("customer_id"),
        F.concat_ws(" ", first, last).alias("full_name"),
        F.concat(local_part, idx.cast("string"), F.lit("@"), domain).alias("email"),
        F.format_string(
            "+1-%03d-555-%04d",
            F.lit(200) + _pick(seed, "area", 700, idx),
            _pick(seed, "line", 10_000, idx),
        ).alias("phone"),
        F.date_add(F.lit(date(1940, 1, 1)), _pick(seed, "birth", 365 * 65, idx).cast("int")).alias("birth_date"),
        _from_pool(pools["zip"], _pick(seed, "zip", len(pools["zip"]), idx)).alias("zip_code"),
        _from_pool(pools["street"], _pick(seed, "street", len(pools["street"]), idx)).alias("street_address"),
        F.date_add(F.lit(date(2018, 1, 1)), _pick(seed, "since", 365 * 8, idx).cast("int")).alias("customer_since"),
    )


def build_orders(
    spark: SparkSession, seed: int, count: int, customers: DataFrame, customer_count: int, t: datetime, pools
) -> DataFrame:
    parts = max(2, min(64, count // 250_000 + 1))
    rows = spark.range(1, count + 1, numPartitions=parts)
    idx = F.col("id")
    buyer = customer_id(_pick(seed, "buyer", customer_count, idx) + 1)
    fault = _pick(seed, "fault", 1000, idx)
    customer_col = (
        F.when(fault == 7, F.lit(None).cast("string"))
        .when(fault == 8, F.lit("   "))
        .when(fault == 9, F.concat(F.lit(" "), buyer, F.lit("  ")))
        .otherwise(buyer)
    )
    # Three years of history before t, and 1% of orders placed after t (later runs' input).
    span_micros = 3 * 365 * MICROS_PER_DAY
    age = F.pmod(_hash(seed, "age", idx), F.lit(span_micros))
    after_t = _pick(seed, "late", 100, idx) == 0
    ordered_at = (
        F.when(fault == 11, F.lit(None).cast("timestamp"))
        .when(
            after_t,
            F.timestamp_micros(
                F.unix_micros(instant(t)) + F.pmod(_hash(seed, "ahead", idx), F.lit(30 * MICROS_PER_DAY))
            ),
        )
        .otherwise(F.timestamp_micros(F.unix_micros(instant(t)) - F.lit(1) - age))
    )
    orders = rows.select(
        F.format_string("O%010d", idx).alias("order_id"),
        buyer.alias("_buyer"),
        customer_col.alias("customer_id"),
        ordered_at.alias("ordered_at"),
        F.element_at(F.array(F.lit("web"), F.lit("app"), F.lit("store")), _pick(seed, "channel", 3, idx) + 1).alias(
            "channel"
        ),
        _from_pool(pools["category"], _pick(seed, "category", len(pools["category"]), idx)).alias("product_category"),
        (_pick(seed, "amount", 50_000, idx) / 100 + 1).cast("decimal(10,2)").alias("amount"),
        (_pick(seed, "items", 5, idx) + 1).cast("int").alias("quantity"),
    )
    personal = customers.select(
        F.col("customer_id").alias("_buyer"), "email", "phone", "full_name", "birth_date", "zip_code", "street_address"
    )
    return (
        orders.join(F.broadcast(personal), on="_buyer", how="left")
        .drop("_buyer")
        .select(
            "order_id",
            "customer_id",
            "email",
            "phone",
            "full_name",
            "birth_date",
            "zip_code",
            "street_address",
            "ordered_at",
            "channel",
            "product_category",
            "quantity",
            "amount",
        )
    )


def _event(purpose: str, status: str, recorded_at: Column, expires_at: Column | None, source: str) -> Column:
    return F.struct(
        F.lit(purpose).alias("purpose"),
        F.lit(status).alias("status"),
        recorded_at.alias("recorded_at"),
        (expires_at if expires_at is not None else F.lit(None).cast("timestamp")).alias("expires_at"),
        F.lit(source).alias("source"),
    )


def build_consent(spark: SparkSession, seed: int, customers: DataFrame, t: datetime) -> DataFrame:
    cid = F.col("customer_id")
    t_micros = F.unix_micros(instant(t))

    def days_before(salt: str, low: int, high: int) -> Column:
        offset = F.lit(low * MICROS_PER_DAY) + F.pmod(_hash(seed, salt, cid), F.lit((high - low) * MICROS_PER_DAY))
        return F.timestamp_micros(t_micros - offset)

    def days_after(salt: str, low: int, high: int) -> Column:
        offset = F.lit(low * MICROS_PER_DAY) + F.pmod(_hash(seed, salt, cid), F.lit((high - low) * MICROS_PER_DAY))
        return F.timestamp_micros(t_micros + offset)

    first_grant = days_before("grant", 400, 1400)
    source = F.element_at(
        F.array(F.lit("web_form"), F.lit("app"), F.lit("email"), F.lit("support")), _pick(seed, "src", 4, cid) + 1
    )
    histories = {
        "granted": [_event("analytics", "granted", first_grant, None, "web_form")],
        "withdrawn": [
            _event("analytics", "granted", first_grant, None, "web_form"),
            _event("analytics", "withdrawn", days_before("withdraw", 1, 300), None, "app"),
        ],
        "regranted": [
            _event("analytics", "granted", first_grant, None, "web_form"),
            _event("analytics", "withdrawn", days_before("withdraw", 200, 390), None, "email"),
            _event("analytics", "granted", days_before("regrant", 1, 190), None, "app"),
        ],
        "expired": [_event("analytics", "granted", first_grant, days_before("expiry", 1, 300), "web_form")],
        "expiring_later": [_event("analytics", "granted", first_grant, days_after("expiry", 1, 400), "web_form")],
        "expires_at_t": [_event("analytics", "granted", first_grant, instant(t), "web_form")],
        "gpc_denied": [
            _event("analytics", "granted", first_grant, None, "web_form"),
            _event("analytics", "denied", days_before("gpc", 1, 300), None, "gpc"),
            _event("marketing", "denied", days_before("gpc", 1, 300), None, "gpc"),
        ],
        "other_purpose_only": [_event("marketing", "granted", first_grant, None, "web_form")],
        "tie_grant_and_withdrawal": [
            _event("analytics", "granted", days_before("tie", 1, 300), None, "web_form"),
            _event("analytics", "withdrawn", days_before("tie", 1, 300), None, "support"),
        ],
        "granted_after_t": [_event("analytics", "granted", days_after("late", 0, 30), None, "app")],
        "withdrawn_after_t": [
            _event("analytics", "granted", first_grant, None, "web_form"),
            _event("analytics", "withdrawn", days_after("late", 0, 30), None, "app"),
        ],
        "no_consent": [],
    }
    scenario = scenario_of(seed, cid)
    events = None
    # An empty array of the event type (a typed literal empty array is not expressible).
    no_events = F.filter(
        F.array(_event("none", "none", F.lit(None).cast("timestamp"), None, "none")), lambda e: F.lit(False)
    )
    for name, history in histories.items():
        value = F.array(*history) if history else no_events
        events = F.when(scenario == name, value) if events is None else events.when(scenario == name, value)
    # Extra purposes for a third of customers, so several purposes live in one log.
    marketing = F.when(
        _pick(seed, "marketing", 3, cid) == 0,
        F.array(_event("marketing", "granted", days_before("mkt", 10, 900), None, "email")),
    ).otherwise(no_events)
    # Sharing with the shipped share policy's recipient: a fifth agree, some of them withdraw later.
    share_grant = _event(SHARE_PURPOSE, "granted", days_before("share", 30, 700), None, "web_form")
    share_pick = _pick(seed, "share", 10, cid)
    sharing = (
        F.when(share_pick < 2, F.array(share_grant))
        .when(
            share_pick == 2,
            F.array(share_grant, _event(SHARE_PURPOSE, "withdrawn", days_before("unshare", 1, 29), None, "app")),
        )
        .otherwise(no_events)
    )
    extra = F.concat(marketing, sharing)
    # Some logs carry the id with stray spaces: it must still match after trimming.
    logged_id = F.when(_pick(seed, "pad", 50, cid) == 0, F.concat(F.lit(" "), cid, F.lit(" "))).otherwise(cid)
    exploded = customers.select(
        logged_id.alias("subject_id"), source.alias("_source"), F.explode(F.concat(events, extra)).alias("e")
    )
    return exploded.select(
        "subject_id",
        "e.purpose",
        "e.status",
        "e.recorded_at",
        "e.expires_at",
        F.when(F.col("e.source") == "web_form", F.col("_source")).otherwise(F.col("e.source")).alias("source"),
    )


def build_erasure_requests(seed: int, customers: DataFrame, t: datetime) -> DataFrame:
    cid = F.col("customer_id")
    bucket = _pick(seed, "erase", 200, cid)
    t_micros = F.unix_micros(instant(t))
    when = F.pmod(_hash(seed, "erase_at", cid), F.lit(200 * MICROS_PER_DAY))
    requested_at = F.when(bucket == 0, F.timestamp_micros(t_micros - F.lit(1) - when)).otherwise(
        F.timestamp_micros(t_micros + when)  # after t: not yet effective for this run
    )
    return customers.filter(bucket <= 1).select(
        F.col("customer_id").alias("subject_id"), requested_at.alias("requested_at")
    )


# raw/orders is partitioned by this column: the first day of the order's month (UTC).
ORDERS_PARTITION = "order_month"


def write_orders(orders: DataFrame, lake: Lake, mode: str, by_month: bool = True) -> None:
    """Writes orders to raw/orders, one folder per month of ``ordered_at`` (its
    ``ORDERS_PARTITION`` is computed here; one file per month and write), or with
    ``by_month=False`` in one folder."""
    orders = orders.drop(ORDERS_PARTITION)
    if not by_month:
        orders.write.mode(mode).parquet(lake.raw("orders"))
        return
    with_month = orders.withColumn(ORDERS_PARTITION, F.to_date(F.date_trunc("month", "ordered_at")))
    with_month.repartition(ORDERS_PARTITION).write.partitionBy(ORDERS_PARTITION).mode(mode).parquet(lake.raw("orders"))


def generate_lake(
    spark: SparkSession,
    lake: Lake,
    customers: int,
    orders: int,
    seed: int,
    run_date: date = DEFAULT_RUN_DATE,
    orders_by_month: bool = True,
) -> GeneratedLake:
    """Writes raw/customers, raw/orders, raw/consent and raw/erasure_requests (overwriting);
    raw/orders in one folder per month, or with ``orders_by_month=False`` in one folder."""
    if customers < 1 or orders < 0:
        from transforms.errors import ConsentgateError

        raise ConsentgateError("generate: --customers must be at least 1 and --orders at least 0")
    t = judgement_instant(run_date)
    pools = _pools(seed)
    customer_rows = build_customers(spark, seed, customers, pools).cache()
    customer_rows.write.mode("overwrite").parquet(lake.raw("customers"))
    # Partitioned by the month of the order (as orders arrive): an incremental run reads
    # only the months it judges again.
    order_rows = build_orders(spark, seed, orders, customer_rows, customers, t, pools)
    write_orders(order_rows, lake, "overwrite", orders_by_month)
    consent = build_consent(spark, seed, customer_rows, t)
    consent.write.mode("overwrite").parquet(lake.consent)
    erasures = build_erasure_requests(seed, customer_rows, t)
    erasures.write.mode("overwrite").parquet(lake.erasure_requests)
    result = GeneratedLake(
        customers=customers,
        orders=orders,
        consent_events=spark.read.parquet(lake.consent).count(),
        erasure_requests=spark.read.parquet(lake.erasure_requests).count(),
    )
    customer_rows.unpersist()
    return result
