"""Consent changes reach data that was already published: a withdrawal anonymises a
subject's rows in the next version; an erasure removes the subject from that version,
from every retained version and from the quarantine, and its tombstone keeps the
subject out after the request log is purged and the subject is ingested again."""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from tests.conftest import ORDERS_POLICY, REPO, TEST_KEY
from tests.lakecheck import append_raw, current_version_dir, nothing_cached, partitioned_rows, pseudonym, read_rows
from transforms.cli import main
from transforms.generate import generate_lake
from transforms.lake import Lake, judgement_instant
from transforms.policy import load_policy
from transforms.quarantine import expire_quarantine

pytestmark = pytest.mark.integration
RUN_DATE = date(2026, 11, 28)
T = judgement_instant(RUN_DATE)
ERASED, WITHDRAWING, GRANTING = "C9999001", "C9999002", "C9999003"
ERASED_UNCONSENTED = "C9999004"  # its row is published anonymised, with no key to find it by
CUSTOMERS_POLICY = REPO / "dags" / "policies" / "customers.yml"


def order(order_id: str, customer: str, at: datetime | None) -> tuple:
    return (
        order_id,
        customer,
        f"{customer.lower()}@example.org",
        "+1-555-555-0199",
        "Test Person",
        date(1970, 1, 1),
        "99999",
        "1 Test St",
        at,
        "web",
        "test",
        1,
        None,
    )


def run(lake: Lake, run_id: str, policy=ORDERS_POLICY) -> dict:
    code = main(["run", "--policy", str(policy), "--lake", lake.root, "--run-date", "2026-11-28", "--run-id", run_id])
    assert code == 0
    return json.loads(Path(lake.report_json(Path(policy).stem, run_id)).read_text())


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory, monkeypatch_module):
    lake = Lake.at(str(tmp_path_factory.mktemp("erasure_lake")))
    generate_lake(spark, lake, customers=200, orders=1500, seed=23, run_date=RUN_DATE)
    append_raw(
        spark,
        lake,
        "orders",
        [
            order("X1", ERASED, T - timedelta(days=3)),
            order("X2", f" {ERASED} ", T - timedelta(days=40)),
            order("X3", ERASED, None),  # quarantined: no event time
            order("Y1", WITHDRAWING, T - timedelta(days=5)),
            order("Z1", GRANTING, T - timedelta(days=200)),  # May 2026
            order("Z2", GRANTING, T - timedelta(days=5)),
            order("W1", ERASED_UNCONSENTED, T - timedelta(days=6)),
        ],
    )
    grants = [(s, "analytics", "granted", T - timedelta(days=90), None, "web_form") for s in (ERASED, WITHDRAWING)]
    grants.append((ERASED, "marketing", "granted", T - timedelta(days=90), None, "email"))
    append_raw(spark, lake, "consent", grants)
    append_raw(
        spark,
        lake,
        "customers",
        [
            (
                ERASED,
                "Test Person",
                "x@example.org",
                "+1-555-555-0199",
                date(1970, 1, 1),
                "99999",
                "1 Test St",
                date(2020, 1, 1),
            ),
        ],
    )
    return lake


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONSENTGATE_HMAC_KEY", TEST_KEY)
        yield patch


FULL_RUN_ARGS = ["--run-date", "2026-11-28", "--run-id", "r2-full", "--full"]


def ordered_rows(folder: Path) -> list[tuple]:
    """A period folder's rows in file order; the folder must hold one file."""
    (file,) = folder.glob("*.parquet")
    return [tuple(row.values()) for row in ds.dataset(str(file), format="parquet").to_table().to_pylist()]


def published_by_id(lake: Lake) -> dict:
    return {r["order_id"]: r for r in read_rows(current_version_dir(lake.root, "orders"))}


def test_withdrawal_and_erasure_reach_published_data(spark, lake, tmp_path, capsys):
    assert run(lake, "c1", policy=CUSTOMERS_POLICY)["published"]
    assert pseudonym(ERASED) in {r["customer_id"] for r in read_rows(current_version_dir(lake.root, "customers"))}
    first = run(lake, "r1")
    rows = published_by_id(lake)
    assert rows["X1"]["customer_id"] == rows["X2"]["customer_id"] == pseudonym(ERASED)
    assert rows["Y1"]["record_state"] == "consented"
    assert {rows[z]["record_state"] for z in ("Z1", "Z2", "W1")} == {"anonymized"}
    quarantine_r1 = Path(first["quarantine_path"])
    assert "X3" in {r["order_id"] for r in read_rows(quarantine_r1)}
    first_version = current_version_dir(lake.root, "orders")
    first_count = len(rows)

    # One customer withdraws, another grants, a third asks for erasure; all before t.
    append_raw(
        spark,
        lake,
        "consent",
        [
            (WITHDRAWING, "analytics", "withdrawn", T - timedelta(hours=1), None, "app"),
            (GRANTING, "analytics", "granted", T - timedelta(hours=2), None, "app"),
        ],
    )
    append_raw(
        spark, lake, "erasure_requests", [(ERASED, T - timedelta(days=1)), (ERASED_UNCONSENTED, T - timedelta(days=1))]
    )
    # Several shuffle partitions, as a job has (the session's tests use one): the run's
    # tombstones must still be appended as one file.
    # r1's quarantine was written 29 days ago: r2's purge rewrites its rows, which must not
    # restart its 30 days (checked at the end).
    written_29_days_ago = time.time() - 29 * 86_400
    for path in [quarantine_r1.parent, *quarantine_r1.parent.rglob("*")]:
        os.utime(path, (written_29_days_ago, written_29_days_ago))
    partitions = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "4")
    spark.catalog.clearCache()
    try:
        second = run(lake, "r2")
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", partitions)
    # The run (enforce, validate, publish) released what it cached: a process may run
    # others after it, and validation would otherwise hold each slice of the output.
    assert nothing_cached(spark)
    rows = published_by_id(lake)
    assert rows["Y1"]["record_state"] == "anonymized" and rows["Y1"]["customer_id"] is None
    assert {rows[z]["customer_id"] for z in ("Z1", "Z2")} == {pseudonym(GRANTING)}
    assert len(rows) == first_count - 3  # the erased subjects' rows
    assert not {"X1", "X2", "W1"} & set(rows)
    assert second["counts"]["erased"]["dropped"] == 3  # X1, X2, W1 (X3, with no event time, is quarantined)
    assert second["erasure"]["new_tombstones"] == 2
    # r1 was the current version: it was replaced by a purged copy (catalog and CURRENT
    # moved to it atomically) before r2 was published.
    assert second["erasure"]["purged_versions"] == ["r1.erased"]
    assert second["erasure"]["purged_quarantine"] == ["r1/rows"]
    assert not first_version.exists()

    # The retained version lost exactly the erased subject's linked rows, and nothing
    # else (an anonymised row links to no one).
    retained = read_rows(first_version.with_name("r1.erased"))
    assert len(retained) == first_count - 2
    assert pseudonym(ERASED) not in {r["customer_id"] for r in retained}
    assert {r["order_id"] for r in read_rows(quarantine_r1)}.isdisjoint({"X3"})
    assert second["quarantine_rows_withheld_for_erasure"] == 1
    assert "X3" not in {r["order_id"] for r in read_rows(second["quarantine_path"])}

    # r2 judged again only the months of the four subjects' rows (May, October and
    # November 2026), took the others from r1's purged copy, and publishes exactly what
    # a full recomputation at t does.
    assert second["incremental"]["mode"] == "incremental"
    assert second["incremental"]["previous_version"] == "r1.erased"
    assert second["incremental"]["periods_rejudged"] == 3
    assert main(["enforce", "--policy", str(ORDERS_POLICY), "--lake", lake.root, *FULL_RUN_ARGS]) == 0
    full = json.loads(Path(lake.step_state("orders", "r2-full", "enforce")).read_text())
    assert full["incremental"]["mode"] == "full" and full["counts"] == second["counts"]
    assert partitioned_rows(current_version_dir(lake.root, "orders")) == partitioned_rows(full["staging_path"])
    # A month judged again is written as a full run writes it: one file, the same rows in the same order.
    for month in ("2026-05-01", "2026-10-01", "2026-11-01"):
        folder = f"ordered_at_month={month}"
        assert ordered_rows(current_version_dir(lake.root, "orders") / folder) == ordered_rows(
            Path(full["staging_path"]) / folder
        )
    shutil.rmtree(lake.staging_run("orders", "r2-full"))

    # The tombstone is a keyed pseudonym, not the id.
    tombstones = read_rows(Path(lake.tombstones_of("orders")))
    assert sorted(t["_cg_subject_hash"] for t in tombstones) == sorted(map(pseudonym, (ERASED, ERASED_UNCONSENTED)))
    # One file for the one run that recorded tombstones, not one per shuffle partition.
    assert len(list(Path(lake.tombstones_of("orders")).glob("*.parquet"))) == 1
    # Owner-only: each hash is the customer's published pseudonym, beside when they asked.
    assert {p.stat().st_mode & 0o777 for p in Path(lake.tombstones).rglob("*")} <= {0o700, 0o600}

    # Another dataset judged from the same lake purges its own versions too.
    customers = run(lake, "c2", policy=CUSTOMERS_POLICY)
    assert customers["erasure"]["new_tombstones"] == 2
    assert customers["erasure"]["purged_versions"] == ["c1.erased"]
    for version in (Path(lake.root) / "clean" / "customers").iterdir():
        if version.is_dir():
            assert pseudonym(ERASED) not in {r["customer_id"] for r in read_rows(version)}

    # The request log is purged and the subject arrives again: still erased.
    shutil.rmtree(lake.erasure_requests)
    append_raw(spark, lake, "orders", [order("X4", ERASED, T - timedelta(days=2))])
    third = run(lake, "r3")
    assert not {"X1", "X2", "X4", "W1"} & set(published_by_id(lake))
    assert third["counts"]["erased"]["dropped"] == 4
    assert third["erasure"]["new_tombstones"] == 0
    assert third["incremental"]["periods_rejudged"] == 1  # November, which has a new row
    # ... by the other dataset too, and by a run of an earlier date (a backfill): the
    # tombstones apply whatever the dataset or the date, the request log gone.
    customers_again = run(lake, "c3", policy=CUSTOMERS_POLICY)
    assert customers_again["counts"]["erased"]["dropped"] == 1
    assert pseudonym(ERASED) not in {r["customer_id"] for r in read_rows(current_version_dir(lake.root, "customers"))}
    earlier = ["--policy", str(ORDERS_POLICY), "--lake", lake.root, "--run-date", "2026-11-20", "--run-id", "r3-old"]
    assert main(["enforce", *earlier]) == 0
    backfill = json.loads(Path(lake.step_state("orders", "r3-old", "enforce")).read_text())
    assert backfill["counts"]["erased"]["dropped"] == 1  # X2: the other rows fall after that t
    assert pseudonym(ERASED) not in {r["customer_id"] for r in read_rows(Path(backfill["staging_path"]))}
    shutil.rmtree(lake.staging_run("orders", "r3-old"))

    # Tombstones hash the key as their dataset normalised it: a policy that lower-cases
    # keys would miss them (and publish the erased subject again), so it is refused.
    assert {t["subject_key_normalize"] for t in read_rows(Path(lake.tombstones_of("orders")))} == {""}
    lowering = tmp_path / "orders.yml"
    lowering.write_text(ORDERS_POLICY.read_text() + "subject_key_normalize: [lower]\n")
    current = current_version_dir(lake.root, "orders")
    capsys.readouterr()
    args = ["run", "--policy", str(lowering), "--lake", lake.root, "--run-date", "2026-11-28", "--run-id", "r4"]
    assert main(args) == 2
    assert capsys.readouterr().err == (
        f"consentgate: {lowering}: subject_key_normalize: [lower] differs from [], with which tombstones in "
        f"{lake.tombstones} were made; erased subjects would not be matched (every dataset of a lake must "
        "normalise subject keys alike)\n"
    )
    assert current_version_dir(lake.root, "orders") == current
    assert not Path(lake.staging_data("orders", "r4")).exists()

    # Two days on, r1's quarantine is past its 30 days though its rows were rewritten since.
    two_days_on = time.time() + 2 * 86_400
    assert expire_quarantine(spark, lake, load_policy(ORDERS_POLICY), now=two_days_on) == ["r1"]


def explain(lake: Lake, subject: str, capsys, *policy: str) -> list[dict]:
    capsys.readouterr()
    args = ["explain", "--subject", subject, "--lake", lake.root, "--run-date", "2026-11-28", "--json"]
    assert main([*args, *policy]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def dataset_policies(tmp_path) -> list[str]:
    """The two datasets' policies (test_sharing.py explains shares)."""
    for policy in (ORDERS_POLICY, CUSTOMERS_POLICY):
        (tmp_path / policy.name).write_text(policy.read_text())
    return ["--policies", str(tmp_path)]


# After the test above: the subject withdrew from analytics, the other was erased.
def test_explain_tells_what_happens_to_each_subject_and_why_without_personal_data(lake, capsys, dataset_policies):
    from transforms.explain import DatasetExplanation, render_text

    [withdrawing] = explain(lake, f"\u00a0{WITHDRAWING} ", capsys, "--policy", str(ORDERS_POLICY))
    assert withdrawing == {
        "dataset": "orders",
        "purpose": "analytics",
        "rows": {"withdrawn": {"anonymized": 1}},
        "deciding_event": {
            "status": "withdrawn",
            "recorded_at": "2026-11-28T23:00:00.000000Z",
            "expires_at": None,
            "source": "app",
        },
        "consent_events": 2,
        "erased": False,
        "published_rows": {},  # its one row is published anonymised, with no link to it
        "recipients": [],
        "caveats": [],
    }

    erased = {e["dataset"]: e for e in explain(lake, ERASED, capsys, *dataset_policies)}
    # X1, X2 and X4 are erased; X3 has no event time, which takes precedence.
    assert erased["orders"]["rows"] == {"erased": {"dropped": 3}, "invalid_event_time": {"quarantined": 1}}
    assert erased["orders"]["erased"] is True and erased["orders"]["published_rows"] == {}
    assert erased["orders"]["deciding_event"]["status"] == "granted"
    assert erased["customers"]["rows"] == {"erased": {"dropped": 1}}

    text = "\n".join(render_text([DatasetExplanation(**e) for e in erased.values()], RUN_DATE))
    assert "  3 rows: erased -> dropped" in text and "erased: yes" in text
    assert "held by third parties now: no current export of the share policies given (earlier exports:" in text
    # Nothing personal: not the id asked about, nor its e-mail or name from the customers table.
    assert sum(value in text for value in (ERASED, "x@example.org", "Test Person")) == 0


def test_a_withdrawal_that_arrived_late_is_not_undone_by_an_older_run_of_the_same_date(spark, lake, capsys):
    """A run left waiting to publish judged at the same t as a rerun that read the consent
    log later: publishing it would give back the rows of a customer who withdrew."""
    steps = ["--policy", str(ORDERS_POLICY), "--lake", lake.root, "--run-date", "2026-11-28", "--run-id", "waited"]
    append_raw(spark, lake, "consent", [(GRANTING, "analytics", "granted", T - timedelta(hours=3), None, "app")])
    assert main(["enforce", *steps]) == 0 and main(["validate", *steps]) == 0
    waited = read_rows(Path(lake.staging_data("orders", "waited")))
    assert {r["order_id"] for r in waited if r["customer_id"] == pseudonym(GRANTING)} == {"Z1", "Z2"}
    # Recorded before t, it reached the consent log after "waited" read it.
    append_raw(spark, lake, "consent", [(GRANTING, "analytics", "withdrawn", T - timedelta(minutes=30), None, "app")])
    rerun = run(lake, "rerun")
    assert {published_by_id(lake)[z]["record_state"] for z in ("Z1", "Z2")} == {"anonymized"}
    capsys.readouterr()
    assert main(["publish", *steps]) == 2
    read_at = json.loads(Path(lake.step_state("orders", "waited", "enforce")).read_text())["inputs_read_at"]
    assert capsys.readouterr().err == (
        f"consentgate: run waited read its inputs at {read_at}, before the current version rerun judged the same "
        f"instant from inputs read at {rerun['inputs_read_at']}: an older judgement is not published\n"
    )
    assert current_version_dir(lake.root, "orders").name == "rerun"
    assert {published_by_id(lake)[z]["customer_id"] for z in ("Z1", "Z2")} == {None}
    assert not Path(lake.staging_data("orders", "waited")).exists()
    superseded = json.loads(Path(lake.step_state("orders", "waited", "publish")).read_text())
    assert superseded["superseded_by"] == "rerun"
