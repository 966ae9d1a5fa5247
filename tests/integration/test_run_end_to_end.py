"""`consentgate run` on a small generated lake, in process, checked against the
pure-Python reference model and read back without Spark."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import shutil
import subprocess
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from tests import reference
from tests.conftest import ORDERS_POLICY, REPO, TEST_KEY
from tests.lakecheck import (
    counts_by_reason,
    current_version_dir,
    expected_reasons,
    personal_values_in,
    pseudonym,
    read_rows,
    table_folder,
)
from tests.reference import ACTIONS
from transforms.cli import main
from transforms.generate import generate_lake
from transforms.lake import judgement_instant
from transforms.policy import load_policy

pytestmark = pytest.mark.integration
RUN_DATE = date(2026, 11, 28)


@pytest.fixture(scope="module")
def generated(spark, session_lake):
    # raw/orders in one folder (other modules: one per month): any layout works, and on
    # a few thousand rows, opening a file per month in every pass costs the suite time.
    generate_lake(spark, session_lake, customers=400, orders=6000, seed=11, run_date=RUN_DATE, orders_by_month=False)
    return session_lake


def run(lake, run_id, *extra, policy=ORDERS_POLICY):
    return main(
        [
            "run",
            "--policy",
            str(policy),
            "--lake",
            lake.root,
            "--run-date",
            RUN_DATE.isoformat(),
            "--run-id",
            run_id,
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def first_run(generated):
    import os

    os.environ["CONSENTGATE_HMAC_KEY"] = TEST_KEY
    os.environ["CONSENTGATE_DATA_DOCS"] = "on"
    try:
        assert run(generated, "first") == 0
    finally:
        del os.environ["CONSENTGATE_HMAC_KEY"]
        os.environ["CONSENTGATE_DATA_DOCS"] = "off"
    report = json.loads(Path(generated.report_json("orders", "first")).read_text())
    return generated, report


def test_every_row_has_the_reason_the_reference_model_gives(first_run):
    lake, report = first_run
    expected = expected_reasons(lake.root, RUN_DATE)
    assert report["rows_in"] == len(expected)
    got = {reason: sum(by_action.values()) for reason, by_action in report["counts"].items() if sum(by_action.values())}
    assert got == counts_by_reason(expected)
    for reason, by_action in report["counts"].items():
        assert list(by_action) == [ACTIONS[reason]]
    # The generator's histories cover every case of the contract at run time.
    assert set(got) == {
        "consented",
        "no_consent",
        "withdrawn",
        "consent_expired",
        "retention_expired",
        "erased",
        "invalid_subject",
        "invalid_event_time",
    }


def test_counts_reconcile_and_the_report_holds_no_personal_data(first_run):
    lake, report = first_run
    totals = report["totals"]
    assert report["rows_in"] == totals["kept"] + totals["anonymized"] + totals["dropped"] + totals["quarantined"]
    assert report["rows_out"] == totals["kept"] + totals["anonymized"]
    assert report["published"] is True and report["validation"]["success"] is True
    assert report["policy_sha256"] == hashlib.sha256(ORDERS_POLICY.read_bytes()).hexdigest()
    # The policy's exact text is kept under its hash, for whoever reads the report later.
    kept = Path(lake.root, "reports", "orders", "policies", f"{report['policy_sha256']}.yml")
    assert kept.read_bytes() == ORDERS_POLICY.read_bytes()
    html = Path(generated_html := lake.report_json("orders", "first")[: -len(".json")] + ".html").read_text()
    assert f"<td class='n'>{totals['kept']}</td>" in html, generated_html
    text = json.dumps(report) + html
    orders = read_rows(Path(lake.root) / "raw" / "orders")  # every row, its raw id too
    assert personal_values_in(text, orders, ("customer_id", "email", "phone", "full_name", "street_address")) == 0
    assert text.count(TEST_KEY) == 0


def test_published_rows_are_exactly_the_kept_and_anonymised_ones(first_run):
    lake, report = first_run
    expected = expected_reasons(lake.root, RUN_DATE)
    state_of = {"kept": "consented", "anonymized": "anonymized"}
    want = {o: state_of[ACTIONS[r]] for o, r in expected.items() if ACTIONS[r] in state_of}
    published = read_rows(current_version_dir(lake.root, "orders"))
    assert {r["order_id"]: r["record_state"] for r in published} == want
    raw = {r["order_id"]: r for r in read_rows(Path(lake.root) / "raw" / "orders")}
    key = TEST_KEY.encode()

    def as_published(row: dict) -> tuple:
        source = raw[row["order_id"]]
        if row["record_state"] == "consented":
            return (
                hmac.new(key, source["customer_id"].strip().encode(), hashlib.sha256).hexdigest(),
                hmac.new(key, source["email"].encode(), hashlib.sha256).hexdigest(),
                "*" * (len(source["phone"]) - 4) + source["phone"][-4:],
                source["birth_date"].replace(month=1, day=1),
                row["zip_code"],
                source["ordered_at"],
            )
        month = source["ordered_at"].replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return (None, None, None, None, source["zip_code"][:3], month)

    columns = ("customer_id", "email", "phone", "birth_date", "zip_code", "ordered_at")
    # Order ids only: a failing assertion prints no personal value.
    wrong = [row["order_id"] for row in published if tuple(row[c] for c in columns) != as_published(row)]
    assert wrong == []
    assert not {"full_name", "street_address"} & set(published[0])


def test_clean_table_reads_from_catalog_pandas_pyarrow_and_duckdb(spark, first_run):
    lake, report = first_run
    folder = current_version_dir(lake.root, "orders")
    assert spark.table("clean.orders").count() == report["rows_out"]
    assert len(pd.read_parquet(folder)) == report["rows_out"]
    assert len(read_rows(folder)) == report["rows_out"]
    query = (
        f"select count(*), count(ordered_at_month) from read_parquet('{folder}/*/*.parquet', hive_partitioning = true)"
    )
    assert duckdb.sql(query).fetchall() == [(report["rows_out"], report["rows_out"])]
    assert spark.table("clean.orders").columns[-1] == "ordered_at_month"


def test_quarantine_holds_the_unjudgeable_rows_owner_only(first_run):
    lake, report = first_run
    folder = Path(report["quarantine_path"])
    rows = read_rows(folder)
    assert len(rows) == report["totals"]["quarantined"] - report["quarantine_rows_withheld_for_erasure"]
    assert {r["quarantine_reason"] for r in rows} == {"invalid_subject", "invalid_event_time"}
    # The declared columns as they arrived, dropped ones included; the undeclared ones left out.
    declared = [c.name for c in load_policy(ORDERS_POLICY).columns]
    raw_columns = list(read_rows(Path(lake.root) / "raw" / "orders")[0])
    assert list(rows[0]) == [*(c for c in raw_columns if c in declared), "quarantine_reason"]
    assert {"street_address", "quantity"} & set(raw_columns) and not {"street_address", "quantity"} & set(rows[0])
    assert oct(folder.parent.stat().st_mode)[-3:] == "700"


def test_the_quarantine_and_staging_are_owner_only_while_spark_writes_them(first_run, hmac_key, monkeypatch):
    """Spark writes its files with the default modes; the run's quarantine folder is made
    owner-only before, so nothing is readable by others before they are tightened (nor
    ever, when the job dies in between)."""
    import transforms.enforce as enforce
    import transforms.quarantine as quarantine

    lake, _ = first_run
    for module in (enforce, quarantine):  # what holds during the write: nothing tightened after it
        monkeypatch.setattr(module, "restrict_to_owner", lambda path: None)
    args = ["--policy", str(ORDERS_POLICY), "--lake", lake.root, "--run-date", RUN_DATE.isoformat()]
    assert main(["enforce", *args, "--run-id", "private-quarantine"]) == 0
    folder = Path(lake.quarantine_run("orders", "private-quarantine"))
    assert read_rows(folder / "rows") and oct(folder.stat().st_mode & 0o777) == "0o700"
    # The staged output too (not validated yet), while what is published stays readable.
    assert oct(Path(lake.staging_run("orders", "private-quarantine")).stat().st_mode & 0o777) == "0o700"
    published = current_version_dir(lake.root, "orders")
    assert all(p.stat().st_mode & 0o005 == 0o005 for p in [published, *published.iterdir()] if p.is_dir())


def test_a_second_dataset_on_the_same_consent_log_gives_each_customer_the_same_pseudonym(first_run, hmac_key):
    """`customers` is judged for marketing, `orders` for analytics, from one consent log."""
    lake, _ = first_run
    customers_policy = ORDERS_POLICY.with_name("customers.yml")
    assert run(lake, "shared", policy=customers_policy) == 0
    t = judgement_instant(RUN_DATE)
    events = [
        reference.Event(e["subject_id"], e["purpose"], e["status"], e["recorded_at"], e["expires_at"], e["source"])
        for e in read_rows(Path(lake.root) / "raw" / "consent")
    ]
    customers = {r["customer_id"] for r in read_rows(Path(lake.root) / "raw" / "customers")}

    def pseudonyms_consented_for(purpose: str) -> set[str]:
        return {
            pseudonym(c)
            for c in customers
            if reference.consent_reason(reference.deciding_event(events, c, purpose, t), t) == "consented"
        }

    marketing = {r["customer_id"] for r in read_rows(current_version_dir(lake.root, "customers"))} - {None}
    assert marketing == pseudonyms_consented_for("marketing")
    analytics = {r["customer_id"] for r in read_rows(current_version_dir(lake.root, "orders"))} - {None}
    assert analytics <= pseudonyms_consented_for("analytics")
    # Customers consenting to both purposes are found in both tables under one pseudonym.
    assert len(marketing & analytics) > 10


def test_consent_coverage_per_purpose_matches_the_reference_model(first_run):
    lake, report = first_run
    t = judgement_instant(RUN_DATE)
    events = [
        reference.Event(e["subject_id"], e["purpose"], e["status"], e["recorded_at"], e["expires_at"], e["source"])
        for e in read_rows(Path(lake.root) / "raw" / "consent")
    ]
    subjects = {
        reference.normalize(o["customer_id"])
        for o in read_rows(Path(lake.root) / "raw" / "orders")
        if o["ordered_at"] is None or o["ordered_at"] < t
    } - {None}
    coverage = report["consent_coverage"]
    assert coverage["subjects"] == len(subjects)
    for purpose in ("analytics", "marketing"):
        decisions = [reference.deciding_event(events, s, purpose, t) for s in subjects]
        by_state = coverage["purposes"][purpose]
        assert by_state["consented"] == sum(reference.is_valid(d, t) for d in decisions), purpose
        assert by_state["no_event"] == sum(d is None for d in decisions), purpose
        assert sum(by_state.values()) == len(subjects)


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    """Headless Chromium with no network side traffic (Debian's package, scripts/ensure_chromium.sh)."""
    executable = shutil.which("chromium")
    assert executable, "chromium is missing: scripts/test.sh installs it (scripts/ensure_chromium.sh)"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    return subprocess.run(
        [executable, *flags, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120
    )


def test_the_html_report_renders_in_chromium_with_its_chart_and_counts(first_run, tmp_path):
    lake, report = first_run
    page = Path(lake.report_json("orders", "first")).with_suffix(".html")
    assert not re.search(r"""(src|href)=['"]?(https?:)?//""", page.read_text())  # nothing from a network
    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "dom").stdout
    bars = re.findall(r'<rect class="bar (\w+)"', dom)
    assert bars == [action for by_action in report["counts"].values() for action, n in by_action.items() if n]
    totals = re.search(r'<table id="totals">(.*?)</table>', dom).group(1)
    for action, n in report["totals"].items():
        assert f'<td>{action}</td><td class="n">{n}</td>' in totals
    assert f'<td class="n">{report["consent_coverage"]["purposes"]["analytics"]["consented"]}</td>' in dom
    assert '<svg id="trend-chart"' in dom and report["policy_sha256"] in dom
    screenshot = REPO / "test-output" / "run_report.png"
    screenshot.parent.mkdir(exist_ok=True)
    shot = chromium(f"--screenshot={screenshot}", "--window-size=1100,2400", page.as_uri(), profile=tmp_path / "shot")
    assert shot.returncode == 0 and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    index = Path(lake.root) / "reports" / "index.html"
    index_dom = chromium("--dump-dom", index.as_uri(), profile=tmp_path / "index").stdout
    assert '<a href="orders/first.html">first</a>' in index_dom


# Before the rerun test, which writes run "first"'s report again.
def test_validation_results_are_rendered_as_data_docs_beside_the_report(first_run):
    lake, report = first_run
    docs = Path(report["validation"]["data_docs"])
    assert docs == Path(lake.data_docs("orders", "first")) / "index.html" and docs.is_file()
    # One validation page per slice the suite checks (GX files suite "orders.all" as orders/all).
    for slice_name in ("all", "consented", "anonymized", "consent_crosscheck", "quarantine"):
        assert list((docs.parent / "validations" / "orders" / slice_name).rglob("*.html")), slice_name
    assert "_data_docs/index.html" in Path(lake.report_json("orders", "first")).with_suffix(".html").read_text()


def test_no_key_stops_with_exit_2_and_publishes_nothing(generated, monkeypatch, capsys):
    monkeypatch.delenv("CONSENTGATE_HMAC_KEY", raising=False)
    before = sorted(p.name for p in (Path(generated.root) / "clean" / "orders").iterdir())
    assert run(generated, "nokey") == 2
    assert "CONSENTGATE_HMAC_KEY" in capsys.readouterr().err
    assert sorted(p.name for p in (Path(generated.root) / "clean" / "orders").iterdir()) == before
    assert not Path(generated.staging_data("orders", "nokey")).exists()


def test_bad_policy_and_missing_column_stop_with_exit_2(generated, tmp_path, hmac_key, capsys):
    bad = tmp_path / "bad.yml"
    bad.write_text(ORDERS_POLICY.read_text().replace("phone:       {consented: mask", "phone:       {consented: blur"))
    assert run(generated, "badpolicy", policy=bad) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(bad) in err and "columns.phone.consented" in err
    missing = tmp_path / "missing.yml"
    missing.write_text(ORDERS_POLICY.read_text() + "  loyalty_tier: keep\n")  # the last key is columns
    assert run(generated, "missingcol", policy=missing) == 2
    assert "'loyalty_tier' is missing" in capsys.readouterr().err


def test_failed_validation_exits_3_quarantines_output_and_leaves_clean_untouched(spark, first_run, hmac_key):
    lake, _ = first_run
    before = current_version_dir(lake.root, "orders")
    published_modes = {p: p.stat().st_mode for p in before.rglob("*")}
    assert (
        main(
            [
                "enforce",
                "--policy",
                str(ORDERS_POLICY),
                "--lake",
                lake.root,
                "--run-date",
                "2026-11-28",
                "--run-id",
                "tampered",
            ]
        )
        == 0
    )
    # Make the recorded counts disagree with the staged rows: the row-count expectation must catch it.
    state_path = Path(lake.step_state("orders", "tampered", "enforce"))
    state = json.loads(state_path.read_text())
    state["totals"]["kept"] += 1
    state_path.write_text(json.dumps(state))
    common = ["--policy", str(ORDERS_POLICY), "--lake", lake.root, "--run-id", "tampered"]
    assert main(["validate", *common, "--run-date", "2026-11-28"]) == 3
    assert main(["publish", *common, "--run-date", "2026-11-28"]) == 2
    assert current_version_dir(lake.root, "orders") == before
    assert table_folder(spark) == before
    failed_output = Path(lake.root, "quarantine", "orders", "tampered", "failed_output")
    assert failed_output.is_dir()
    # The rerun took periods from the published version by hard links: quarantining them
    # made the quarantine's copies private, never the published files analysts read.
    enforced = json.loads(Path(lake.step_state("orders", "tampered", "enforce")).read_text())
    assert enforced["incremental"]["periods_reused"] > 0
    assert {p: p.stat().st_mode for p in before.rglob("*")} == published_modes
    assert all(p.stat().st_mode & 0o077 == 0 for p in failed_output.rglob("*"))
    validation = json.loads(Path(lake.step_state("orders", "tampered", "validate")).read_text())
    assert validation["failed"] == [
        "expect_table_row_count_to_equal(all)",
        "expect_table_row_count_to_equal(consented)",
    ]


def content(folder: Path) -> list[tuple[str, str]]:
    """Every data and marker file's name (less Spark's per-job id) and SHA-256; but when the
    run read its inputs, which differs by design."""
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".") and p.name != "_inputs_read_at"
    )
    return [
        (
            re.sub(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", "", str(p.relative_to(folder))),
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in files
    ]


def test_rerun_publishes_a_new_version_with_byte_identical_content(spark, first_run, hmac_key):
    lake, _ = first_run
    first = current_version_dir(lake.root, "orders")
    # Same run id again: a new version beside the old one. Judged in full (an incremental
    # rerun would take every period from the first), so that the files are written anew.
    assert run(lake, "first", "--full") == 0
    second = current_version_dir(lake.root, "orders")
    assert second.name == "first.2" and first.exists()
    key = lambda r: r["order_id"]  # noqa: E731
    assert sorted(read_rows(first), key=key) == sorted(read_rows(second), key=key)
    assert content(first) == content(second)
    assert any(name.endswith(".parquet") for name, _ in content(first))
    assert table_folder(spark) == second


def test_an_older_judgement_is_not_published_over_a_newer_one(generated, hmac_key, capsys):
    before = current_version_dir(generated.root, "orders")
    args = ["run", "--policy", str(ORDERS_POLICY), "--lake", generated.root, "--run-date", "2026-11-27"]
    assert main([*args, "--run-id", "older"]) == 2
    assert "an older judgement is not published" in capsys.readouterr().err
    assert current_version_dir(generated.root, "orders") == before
    # Judged and validated, reported, and marked as superseded (a backfill moves on).
    report = json.loads(Path(generated.report_json("orders", "older")).read_text())
    assert report["published"] is False and report["superseded_by"] == before.name
    assert report["rows_in"] == len(expected_reasons(generated.root, date(2026, 11, 27)))
    assert not Path(generated.staging_data("orders", "older")).exists()


# Planted in a staged output, one row each: what every column-level expectation forbids.
LEAKS = {
    ("consented", "customer_id"): "C7700001",  # a raw key where a pseudonym belongs
    ("consented", "phone"): "+1-555-770-0142",  # unmasked
    ("anonymized", "email"): "leaky.person@example.org",  # dropped for anonymised rows
    ("consented", "birth_date"): date(1980, 5, 17),  # not generalised to its year
    ("consented", "ordered_at"): "past retention",
    ("anonymized", "zip_code"): "77012",  # not cut to its first three characters
    ("anonymized", "ordered_at"): "not its month",
}


def test_every_column_expectation_catches_its_leak_and_records_no_value(spark, first_run, hmac_key, monkeypatch):
    from pyspark.sql import functions as F

    lake, _ = first_run
    args = ["--policy", str(ORDERS_POLICY), "--lake", lake.root, "--run-date", "2026-11-28", "--run-id", "leaky"]
    assert main(["enforce", *args]) == 0
    staged = Path(lake.staging_data("orders", "leaky"))
    output = spark.read.parquet(str(staged))
    ids = {
        state: sorted(r.order_id for r in output.filter(F.col("record_state") == state).select("order_id").collect())
        for state in ("consented", "anonymized")
    }
    t = judgement_instant(RUN_DATE)
    planted = output
    for n, ((state, column), value) in enumerate(LEAKS.items()):
        target = ids[state][n]
        if value == "past retention":
            value = t.replace(year=t.year - 3)
        elif value == "not its month":
            value = None  # set below: the row's own time plus a few hours, in its month
            changed = F.col(column) + F.expr("INTERVAL 7 HOURS")
        if value is not None:
            changed = F.lit(value).cast(dict(output.dtypes)[column])
        planted = planted.withColumn(column, F.when(F.col("order_id") == target, changed).otherwise(F.col(column)))
    # An anonymised row of a month past the retention (its rule keeps the month: it conforms).
    expired = ids["anonymized"][len(LEAKS)]
    expired_month = F.lit(t.replace(year=t.year - 3, day=1)).cast("timestamp")
    is_expired = F.col("order_id") == expired
    planted = planted.withColumn("ordered_at", F.when(is_expired, expired_month).otherwise(F.col("ordered_at")))
    # A column no policy declares, as an enforce step gone wrong would stage it.
    planted = planted.withColumn("full_name", F.lit("Planted Person"))
    # Written beside and swapped in: a reused month's files are hard links to the published ones.
    rewritten = staged.with_name("planted")
    planted.write.partitionBy("ordered_at_month").parquet(str(rewritten))
    for marker in staged.glob("_*"):
        if marker.name != "_SUCCESS":
            shutil.copy(marker, rewritten / marker.name)
    shutil.rmtree(staged)
    rewritten.rename(staged)
    # One quarantined row lost.
    quarantine = Path(lake.quarantine_rows("orders", "leaky"))
    held = spark.read.parquet(str(quarantine))
    held.limit(held.count() - 1).localCheckpoint().write.mode("overwrite").parquet(str(quarantine))

    monkeypatch.setenv("CONSENTGATE_DATA_DOCS", "on")
    assert main(["validate", *args]) == 3
    validation = json.loads(Path(lake.step_state("orders", "leaky", "validate")).read_text())
    assert validation["failed"] == [
        "expect_table_columns_to_match_ordered_list(all)",
        "expect_column_values_to_match_regex(consented.customer_id)",
        "expect_column_values_to_match_regex(consented.phone)",
        "expect_column_values_to_not_match_regex(consented.phone)",
        "expect_column_values_to_be_between(consented.ordered_at)",
        "expect_column_values_to_be_null(anonymized.email)",
        "expect_column_values_to_be_between(anonymized.ordered_at)",
        # The planted key is a subject the consent log does not know: no consent.
        "expect_table_row_count_to_equal(consent_crosscheck)",
        "expect_column_values_to_be_between(rule_conformance.consented:birth_date)",
        "expect_column_values_to_be_between(rule_conformance.anonymized:zip_code)",
        "expect_column_values_to_be_between(rule_conformance.anonymized:ordered_at)",
        "expect_table_row_count_to_equal(quarantine)",
    ]
    failed = [r for r in validation["expectations"] if not r["success"]]
    assert [r.get("unexpected_count", 1) for r in failed] == [1] * len(failed)
    # Neither the step's results nor the Data Docs hold a planted value.
    written = [Path(lake.step_state("orders", "leaky", "validate")).read_text()]
    docs = Path(lake.root, "reports", "orders", "leaky_data_docs")
    pages = [p for p in docs.rglob("*") if p.is_file() and p.suffix in (".html", ".json")]
    written += [p.read_text(errors="replace") for p in pages]
    assert len(pages) > 2
    planted_text = [{"v": v} for v in [*LEAKS.values(), "Planted Person"] if isinstance(v, str) and v[0] in "+Cl7P"]
    assert len(planted_text) == 5
    assert sum(personal_values_in(text, planted_text, ("v",)) for text in written) == 0
