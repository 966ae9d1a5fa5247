"""An erasure reaches retained versions published under an earlier policy: each version
is searched for the subject as it published the subject key (kept, pseudonymised,
normalised), and a version that cannot be searched (its key dropped while it kept
other personal data, or normalised otherwise) is removed rather than left for a rollback
to publish again."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import ORDERS_POLICY
from tests.lakecheck import append_raw, generated_lake, pseudonym, read_rows
from transforms.cli import main
from transforms.lake import Lake, judgement_instant

pytestmark = pytest.mark.integration
RUN_DATE = date(2026, 11, 28)
T = judgement_instant(RUN_DATE)
ERASED = "C9999001"
PSEUDONYMISED_KEY = "customer_id: {consented: pseudonymize, anonymized: drop, category: identifier}"


def order(order_id: str, customer: str, at: datetime) -> tuple:
    return (order_id, customer, "e@example.org", "+1-555-555-0199", "Test Person", date(1970, 1, 1), "99999",
            "1 Test St", at, "web", "test", 1, None)  # fmt: skip


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    sizes = dict(customers=60, orders=300, seed=31)
    with generated_lake(spark, tmp_path_factory, "policy_change_lake", RUN_DATE, **sizes) as lake:
        append_raw(spark, lake, "orders", [order("X1", ERASED, T - timedelta(days=3))])
        append_raw(spark, lake, "consent", [(ERASED, "analytics", "granted", T - timedelta(days=90), None, "web")])
        yield lake


def policy_with(tmp_path: Path, name: str, *replacements: tuple[str, str], extra: str = "") -> Path:
    text = ORDERS_POLICY.read_text()
    for old, new in replacements:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / name / "orders.yml"
    path.parent.mkdir()
    path.write_text(text + extra)
    return path


def run(lake: Lake, run_id: str, policy: Path) -> int:
    return main(["run", "--policy", str(policy), "--lake", lake.root, "--run-date", "2026-11-28", "--run-id", run_id])


def report(lake: Lake, run_id: str) -> dict:
    return json.loads(Path(lake.report_json("orders", run_id)).read_text())


def version(lake: Lake, name: str) -> Path:
    return Path(lake.clean_version("orders", name))


def test_versions_published_under_other_subject_key_rules_are_purged_or_removed(spark, lake, tmp_path, capsys):
    keeps_key = policy_with(tmp_path, "keep", (PSEUDONYMISED_KEY, "customer_id: {consented: keep, anonymized: drop}"))
    # No subject key in consented rows, but their postcode is kept: personal data that
    # no erasure could find by subject.
    drops_key = policy_with(
        tmp_path,
        "drop",
        (PSEUDONYMISED_KEY, "customer_id: drop"),
        ("email:       {consented: pseudonymize,", "email:       {consented: drop,"),
        ("phone:       {consented: mask,", "phone:       {consented: drop,"),
    )
    assert run(lake, "kept1", keeps_key) == 0
    assert ERASED in {r["customer_id"] for r in read_rows(version(lake, "kept1"))}
    assert run(lake, "dropped2", drops_key) == 0
    assert "customer_id" not in read_rows(version(lake, "dropped2"))[0]
    # As a version from before the record: searched as today's policy publishes, by a
    # column it does not have.
    (version(lake, "dropped2") / "_subject_key.json").unlink()
    assert run(lake, "pseudo3", ORDERS_POLICY) == 0
    kept_rows = len(read_rows(version(lake, "kept1")))

    append_raw(spark, lake, "erasure_requests", [(ERASED, T - timedelta(days=1))])
    assert run(lake, "pseudo4", ORDERS_POLICY) == 0
    erasure = report(lake, "pseudo4")["erasure"]
    # kept1 was searched by its raw keys (the policy of today would have compared them
    # with pseudonyms and found nothing), dropped2 could not be searched at all.
    assert erasure["purged_versions"] == ["kept1", "pseudo3.erased"]
    assert erasure["removed_versions_unsearchable"] == ["dropped2"]
    purged = read_rows(version(lake, "kept1"))
    assert len(purged) == kept_rows - 1 and ERASED not in {r["customer_id"] for r in purged}
    assert not version(lake, "dropped2").exists()
    assert pseudonym(ERASED) not in {r["customer_id"] for r in read_rows(version(lake, "pseudo3.erased"))}
    # A rollback has nothing left to bring the subject back from.
    capsys.readouterr()
    assert main(["rollback", "--dataset", "orders", "--lake", lake.root, "--to", "dropped2", "--reason", "x"]) == 2


@pytest.fixture(scope="module")
def plain_lake(spark, tmp_path_factory):
    sizes = dict(customers=60, orders=300, seed=32)
    with generated_lake(spark, tmp_path_factory, "normalisation_lake", RUN_DATE, **sizes) as lake:
        # Nobody erased yet: no tombstone fixes the lake's normalisation.
        requests = spark.read.parquet(lake.erasure_requests)
        spark.createDataFrame([], requests.schema).write.mode("overwrite").parquet(lake.erasure_requests)
        append_raw(spark, lake, "orders", [order("X1", ERASED, T - timedelta(days=3))])
        append_raw(spark, lake, "consent", [(ERASED, "analytics", "granted", T - timedelta(days=90), None, "web")])
        yield lake


def test_a_normalisation_changed_before_the_first_erasure_leaves_no_erased_subject_behind(
    spark, plain_lake, tmp_path, capsys
):
    lake = plain_lake
    lowering = policy_with(tmp_path, "lower", extra="subject_key_normalize: [lower]\n")
    assert run(lake, "plain0", ORDERS_POLICY) == 0
    assert run(lake, "plain1", ORDERS_POLICY) == 0
    # No tombstone yet fixes the lake's normalisation, but the current version's pseudonyms
    # were made without lower-casing: the erased subject's would not be found there.
    append_raw(spark, lake, "erasure_requests", [(ERASED, T - timedelta(days=1))])
    capsys.readouterr()
    assert run(lake, "lower2", lowering) == 2
    assert capsys.readouterr().err == (
        f"consentgate: {lowering}: subject_key_normalize: [lower] cannot find erased subjects in the current "
        f"version {version(lake, 'plain1')}, published under []; run under [] (a normalisation can change only "
        "by a run that publishes before the next erasure)\n"
    )
    assert (Path(lake.root) / "clean" / "orders" / "CURRENT").read_text() == "plain1\n"
    # Refused before anything was removed: the older version, searchable under [], is kept.
    for name in ("plain0", "plain1"):
        assert pseudonym(ERASED) in {r["customer_id"] for r in read_rows(version(lake, name))}

    # Published under [lower] before the request: the older version cannot be searched
    # and goes; the current one is purged.
    requests = Path(lake.erasure_requests)
    held = tmp_path / "requests"
    requests.rename(held)
    assert run(lake, "lower3", lowering) == 0
    held.rename(requests)
    assert run(lake, "lower4", lowering) == 0
    erasure = report(lake, "lower4")["erasure"]
    assert erasure["removed_versions_unsearchable"] == ["plain0", "plain1"]
    assert erasure["purged_versions"] == ["lower3.erased"]
    remaining = [p.name for p in (Path(lake.root) / "clean" / "orders").iterdir() if p.is_dir()]
    assert sorted(remaining) == ["lower3.erased", "lower4"]
    for name in remaining:
        assert pseudonym(ERASED.lower()) not in {r["customer_id"] for r in read_rows(version(lake, name))}


@pytest.fixture(scope="module")
def one_customer_lake(spark, tmp_path_factory):
    with generated_lake(
        spark, tmp_path_factory, "one_customer_lake", RUN_DATE, customers=10, orders=20, seed=33
    ) as lake:
        orders = spark.read.parquet(lake.raw("orders"))
        only = spark.createDataFrame([order("X1", ERASED, T - timedelta(days=3))], orders.drop("order_month").schema)
        spark.createDataFrame([], orders.schema).write.mode("overwrite").parquet(lake.raw("orders"))
        append_raw(spark, lake, "orders", [tuple(only.first())])
        append_raw(spark, lake, "consent", [(ERASED, "analytics", "granted", T - timedelta(days=90), None, "web")])
        requests = spark.read.parquet(lake.erasure_requests)
        spark.createDataFrame([], requests.schema).write.mode("overwrite").parquet(lake.erasure_requests)
        yield lake


def test_a_purge_that_empties_the_current_version_publishes_an_empty_table(spark, one_customer_lake):
    lake = one_customer_lake
    assert run(lake, "only1", ORDERS_POLICY) == 0
    assert [r["order_id"] for r in read_rows(version(lake, "only1"))] == ["X1"]
    append_raw(spark, lake, "erasure_requests", [(ERASED, T - timedelta(days=1))])
    # The purged copy of only1 has no row left; it still has the table's columns, so the
    # catalog moves to it and the run goes on (it stopped there, every run after it too).
    assert run(lake, "only2", ORDERS_POLICY) == 0
    assert report(lake, "only2")["erasure"]["purged_versions"] == ["only1.erased"]
    for name in ("only1.erased", "only2"):
        assert read_rows(version(lake, name)) == []
        assert "customer_id" in spark.read.parquet(str(version(lake, name))).columns
    assert spark.table("clean.orders").count() == 0
