"""Third-party sharing on hand-written histories over a generated lake: an export holds
exactly the rows of customers whose consent to ``share:<recipient>`` is valid at t,
each recipient's pseudonyms are its own (two recipients cannot join their copies),
every export is in the disclosure log, an erasure reaches an export already made, and
``explain`` names the recipients that hold a customer's rows."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import REPO, TEST_KEY
from tests.lakecheck import append_raw, expected_reasons, read_rows
from transforms.cli import main
from transforms.generate import generate_lake
from transforms.lake import Lake, judgement_instant

pytestmark = pytest.mark.integration
RUN_DATE = date(2026, 11, 28)
T = judgement_instant(RUN_DATE)
ACME_POLICY = REPO / "dags" / "policies" / "orders_to_acme_ads.yml"
ORDERS_POLICY = REPO / "dags" / "policies" / "orders.yml"
# Hand-written customers: one shares with both recipients; the others must never be exported.
SHARER = "C9999101"
ANALYTICS_ONLY = "C9999102"  # consented to analytics, not to sharing
WITHDREW = "C9999103"  # granted sharing, withdrew before t
GPC = "C9999104"  # granted sharing, then a Global Privacy Control refusal under another purpose
TOO_LATE = "C9999105"  # grants sharing only after t
NEVER_EXPORTED = (ANALYTICS_ONLY, WITHDREW, GPC, TOO_LATE)


def hex_hmac(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def recipient_pseudonym(recipient: str, value: str) -> str:
    """Written from the contract: HMAC(recipient key, our pseudonym), the recipient key
    being HMAC(our key, 0xFF + "consentgate derived key: recipient <name>")."""
    recipient_key = hmac.new(
        TEST_KEY.encode(), b"\xff" + f"consentgate derived key: recipient {recipient}".encode(), hashlib.sha256
    ).digest()
    return hex_hmac(recipient_key, hex_hmac(TEST_KEY.encode(), value))


def order(order_id: str, customer: str, at: datetime) -> tuple:
    return (order_id, customer, f"{order_id.lower()}@example.org", "+1-555-555-0142", "Share Test", date(1980, 5, 5),
            "12345", "5 Share St", at, "web", "books", 2, None)  # fmt: skip


@pytest.fixture(scope="module")
def keyed():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONSENTGATE_HMAC_KEY", TEST_KEY)
        yield


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory, keyed):
    lake = Lake.at(str(tmp_path_factory.mktemp("sharing_lake")))
    generate_lake(spark, lake, customers=150, orders=1200, seed=31, run_date=RUN_DATE)

    append_raw(
        spark,
        lake,
        "orders",
        [order("S1", SHARER, T - timedelta(days=2)), order("S2", f" {SHARER}", T - timedelta(days=30))]
        + [order(f"N{i}", subject, T - timedelta(days=3)) for i, subject in enumerate(NEVER_EXPORTED)],
    )
    granted = T - timedelta(days=60)
    append_raw(
        spark,
        lake,
        "consent",
        [
            (SHARER, "share:acme_ads", "granted", granted, None, "web_form"),
            (SHARER, "share:beta_media", "granted", granted, None, "app"),
            (ANALYTICS_ONLY, "analytics", "granted", granted, None, "web_form"),
            (WITHDREW, "share:acme_ads", "granted", granted, None, "web_form"),
            (WITHDREW, "share:acme_ads", "withdrawn", T - timedelta(hours=2), None, "app"),
            (GPC, "share:acme_ads", "granted", granted, None, "web_form"),
            (GPC, "analytics", "denied", T - timedelta(days=1), None, "gpc"),
            (TOO_LATE, "share:acme_ads", "granted", T + timedelta(hours=1), None, "web_form"),
        ],
    )
    return lake


@pytest.fixture(scope="module")
def beta_policy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("share_policies") / "orders_to_beta_media.yml"
    path.write_text(ACME_POLICY.read_text().replace("acme_ads", "beta_media"))
    return path


def run(lake: Lake, policy: Path, run_id: str) -> dict:
    code = main(["run", "--policy", str(policy), "--lake", lake.root, "--run-date", "2026-11-28", "--run-id", run_id])
    assert code == 0
    return json.loads(Path(lake.report_json(f"orders-to-{policy.stem.removeprefix('orders_to_')}", run_id)).read_text())


def export_rows(lake: Lake, recipient: str) -> list[dict]:
    folder = Path(lake.root) / "exports" / recipient / "orders"
    return read_rows(folder / (folder / "CURRENT").read_text().strip())


def disclosures(lake: Lake) -> list[dict]:
    return [json.loads(line) for line in Path(lake.disclosure_log).read_text().splitlines()]


def test_an_export_holds_exactly_the_consented_customers_in_the_recipients_own_pseudonyms(lake, beta_policy):
    report = run(lake, ACME_POLICY, "s1")
    reasons = expected_reasons(lake.root, RUN_DATE, retention_days=365, purpose="share:acme_ads", sale_or_sharing=True)
    raw = {r["order_id"]: r for r in read_rows(lake.raw("orders"))}
    consented = sorted(order_id for order_id, reason in reasons.items() if reason == "consented")
    assert {"S1", "S2"} <= set(consented) and len(consented) > 20  # generated customers share too

    rows = export_rows(lake, "acme_ads")
    assert sorted((r["order_id"], r["customer_id"]) for r in rows) == sorted(
        (recipient_pseudonym("acme_ads", o), recipient_pseudonym("acme_ads", raw[o]["customer_id"].strip()))
        for o in consented
    )
    assert {r["record_state"] for r in rows} == {"consented"}
    assert {r["ordered_at"].time() for r in rows} == {datetime.min.time()}  # generalize:day
    sharer = recipient_pseudonym("acme_ads", SHARER)
    assert sum(r["customer_id"] == sharer for r in rows) == 2
    exported = {r["customer_id"] for r in rows}
    for subject in NEVER_EXPORTED:
        assert recipient_pseudonym("acme_ads", subject) not in exported
    # Nothing an analyst or another recipient holds: not our pseudonyms, not the raw ids.
    assert not exported & {hex_hmac(TEST_KEY.encode(), r["customer_id"].strip()) for r in raw.values()}
    assert not {r["order_id"] for r in rows} & set(raw)
    assert not (Path(lake.root) / "clean").exists()  # nothing for analysts, nothing in the catalog

    assert report["published"] and report["table"] is None
    assert report["counts"]["consented"] == {"kept": len(consented)}
    assert report["totals"]["anonymized"] == 0  # a share never exports anonymised rows

    [entry] = disclosures(lake)
    subjects = {raw[o]["customer_id"].strip() for o in consented}
    assert {k: v for k, v in entry.items() if k not in ("at", "user", "path", "policy_path")} == {
        "recipient": "acme_ads",
        "purpose": "share:acme_ads",
        "dataset": "orders",
        "export": "orders-to-acme_ads",
        "version": "s1",
        "rows": len(consented),
        "subjects": len(subjects),
        "columns": ["customer_id", "order_id", "ordered_at", "product_category", "amount", "zip_code"],
        "run_id": "s1",
        "judged_at": T.isoformat(),
        "policy_sha256": hashlib.sha256(ACME_POLICY.read_bytes()).hexdigest(),
        "recipient_key_fingerprint": report["share"]["recipient_key_fingerprint"],
    }
    assert entry["path"].endswith("/exports/acme_ads/orders/s1")

    # Another recipient: only the one customer who agreed to it, under pseudonyms of its own.
    run(lake, beta_policy, "b1")
    beta = export_rows(lake, "beta_media")
    assert sorted(r["customer_id"] for r in beta) == [recipient_pseudonym("beta_media", SHARER)] * 2
    assert not {r["customer_id"] for r in beta} & exported
    assert not {r["order_id"] for r in beta} & {r["order_id"] for r in rows}
    assert [e["recipient"] for e in disclosures(lake)] == ["acme_ads", "beta_media"]
    assert disclosures(lake)[1]["subjects"] == 1 and disclosures(lake)[1]["rows"] == 2


def explain(lake: Lake, subject: str, capsys, policies: Path) -> dict[str, dict]:
    capsys.readouterr()
    args = ["explain", "--subject", subject, "--lake", lake.root, "--run-date", "2026-11-28", "--json"]
    assert main([*args, "--policies", str(policies)]) == 0
    return {e["dataset"]: e for e in json.loads(capsys.readouterr().out)}


def test_explain_names_the_recipients_holding_a_customers_rows(lake, beta_policy, capsys, tmp_path):
    folder = tmp_path / "policies"
    folder.mkdir()
    for policy in (ORDERS_POLICY, ACME_POLICY, beta_policy):
        (folder / policy.name).write_text(policy.read_text())
    sharer = explain(lake, SHARER, capsys, folder)
    assert sharer["orders-to-acme_ads"]["rows"] == {"consented": {"kept": 2}}
    assert sharer["orders-to-acme_ads"]["published_rows"] == {"consented": 2}
    assert sharer["orders-to-acme_ads"]["deciding_event"]["source"] == "web_form"
    assert sharer["orders-to-beta_media"]["deciding_event"]["source"] == "app"
    for dataset in ("orders", "orders-to-acme_ads", "orders-to-beta_media"):
        assert sharer[dataset]["recipients"] == ["acme_ads", "beta_media"]

    # A refusal signalled by Global Privacy Control under another purpose decides the share.
    (acme_only := tmp_path / "acme").mkdir()
    (acme_only / ACME_POLICY.name).write_text(ACME_POLICY.read_text())
    gpc = explain(lake, GPC, capsys, acme_only)
    assert gpc["orders-to-acme_ads"]["rows"] == {"no_consent": {"dropped": 1}}
    assert gpc["orders-to-acme_ads"]["recipients"] == []
    assert gpc["orders-to-acme_ads"]["deciding_event"] == {
        "status": "denied",
        "recorded_at": (T - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
        "expires_at": None,
        "source": "gpc",
    }


# After the tests above: the sharing customer asks for erasure, a generated one withdraws.
def test_erasure_and_withdrawal_reach_the_export_already_made(spark, lake):
    schema = spark.read.parquet(lake.erasure_requests).schema
    spark.createDataFrame([(SHARER, T - timedelta(days=1))], schema).write.mode("append").parquet(lake.erasure_requests)
    reasons = expected_reasons(lake.root, RUN_DATE, retention_days=365, purpose="share:acme_ads", sale_or_sharing=True)
    raw = {r["order_id"]: r for r in read_rows(lake.raw("orders"))}
    withdrawing = sorted(raw[o]["customer_id"].strip() for o, reason in reasons.items() if reason == "consented")[0]
    spark.createDataFrame(
        [(withdrawing, "share:acme_ads", "withdrawn", T - timedelta(hours=3), None, "app")],
        spark.read.parquet(lake.consent).schema,
    ).write.mode("append").parquet(lake.consent)
    before = export_rows(lake, "acme_ads")
    gone = {recipient_pseudonym("acme_ads", SHARER), recipient_pseudonym("acme_ads", withdrawing)}
    leaving = [r for r in before if r["customer_id"] in gone]
    assert {r["customer_id"] for r in leaving} == gone

    first = json.loads(Path(lake.report_json("orders-to-acme_ads", "s1")).read_text())
    report = run(lake, ACME_POLICY, "s2")
    # The export already made was purged of the erased customer (its current copy replaced
    # atomically); then s2 replaced it, and the recipient's folder holds s2 alone, so the
    # customer who withdrew is in no export the recipient can still be handed.
    assert report["erasure"]["purged_versions"] == ["s1.erased"]
    assert sorted(p.name for p in (Path(lake.root) / "exports" / "acme_ads" / "orders").iterdir()) == [
        "CURRENT",
        "s2",
    ]
    assert not gone & {r["customer_id"] for r in export_rows(lake, "acme_ads")}
    assert report["counts"]["erased"]["dropped"] == first["counts"]["erased"]["dropped"] + 2
    assert report["counts"]["withdrawn"]["dropped"] == first["counts"]["withdrawn"]["dropped"] + len(leaving) - 2
    # One line per export made available: s1, its purged copy, s2.
    logged = [d for d in disclosures(lake) if d["export"] == "orders-to-acme_ads"]
    by_version = {d["version"]: d for d in logged}
    assert [d["version"] for d in logged].count("s1.erased") == 1 and logged[-1]["version"] == "s2"
    s1, purged, s2 = by_version["s1"], by_version["s1.erased"], by_version["s2"]
    erased_rows = sum(r["customer_id"] == recipient_pseudonym("acme_ads", SHARER) for r in before)
    assert (purged["rows"], purged["subjects"]) == (s1["rows"] - erased_rows, s1["subjects"] - 1)
    assert (purged["purged_from"], purged["reason"], purged["judged_at"]) == ("s1", "erasure", s1["judged_at"])
    assert purged["path"].endswith("exports/acme_ads/orders/s1.erased") and purged["run_id"] == "s1"
    assert (s2["rows"], s2["subjects"]) == (len(before) - len(leaving), s1["subjects"] - 2)


def test_a_purge_of_the_export_stopped_before_its_swap_logs_the_purged_copy_once(spark, lake, monkeypatch):
    """The purged copy's line is logged before the copy is made current; a job that dies in
    between leaves the copy and the line, and its retry makes the copy again under the
    same name, with no second line (it logged one for a copy under another name)."""
    import transforms.publish as publish

    exports = Path(lake.root) / "exports" / "acme_ads" / "orders"
    current = (exports / "CURRENT").read_text().strip()
    in_export = {r["customer_id"] for r in export_rows(lake, "acme_ads")}
    reasons = expected_reasons(lake.root, RUN_DATE, retention_days=365, purpose="share:acme_ads", sale_or_sharing=True)
    raw = {r["order_id"]: r["customer_id"].strip() for r in read_rows(lake.raw("orders"))}
    consented = sorted({raw[o] for o, reason in reasons.items() if reason == "consented"})
    erased = next(c for c in consented if recipient_pseudonym("acme_ads", c) in in_export)
    append_raw(spark, lake, "erasure_requests", [(erased, T - timedelta(hours=1))])
    common = ["--policy", str(ACME_POLICY), "--lake", lake.root, "--run-date", "2026-11-28", "--run-id", "purge-dies"]
    real_repoint = publish.repoint_current

    def dies_swapping_to_the_copy(spark_, lake_, dataset, version):
        if version.endswith(".erased"):
            raise OSError("killed")
        real_repoint(spark_, lake_, dataset, version)

    monkeypatch.setattr(publish, "repoint_current", dies_swapping_to_the_copy)
    assert main(["enforce", *common]) == 1
    purged_lines = [d for d in disclosures(lake) if d.get("purged_from") == current]
    assert [d["version"] for d in purged_lines] == [f"{current}.erased"]
    assert (exports / "CURRENT").read_text().strip() == current
    monkeypatch.setattr(publish, "repoint_current", real_repoint)
    assert main(["enforce", *common]) == 0
    assert [d for d in disclosures(lake) if d.get("purged_from") == current] == purged_lines
    assert sorted(p.name for p in exports.iterdir()) == ["CURRENT", f"{current}.erased"]
    assert (exports / "CURRENT").read_text().strip() == f"{current}.erased"
    assert recipient_pseudonym("acme_ads", erased) not in {r["customer_id"] for r in export_rows(lake, "acme_ads")}


@pytest.mark.parametrize("fault", ["move", "recording the line"])
def test_a_share_retried_after_a_failed_publish_logs_its_disclosure_once(lake, monkeypatch, fault):
    """The disclosure is logged before the export is made available; a retry of a publish
    that stopped after logging it (the move failed), or while recording that it had
    (the job died writing its progress), goes on with that line rather than a second."""
    import transforms.publish as publish

    run_id = f"retried-{fault.split()[0]}"
    common = ["--policy", str(ACME_POLICY), "--lake", lake.root, "--run-date", "2026-11-28", "--run-id", run_id]
    assert main(["enforce", *common]) == 0 and main(["validate", *common]) == 0
    logged_before = len(disclosures(lake)) if Path(lake.disclosure_log).exists() else 0  # 0 when run alone
    real_move, real_write_json = publish.move, publish.write_json

    def fails(*args):
        raise OSError("no space left")

    def dies_recording_the_line(path, value):
        if value.get("disclosure") is not None:
            raise OSError("killed")
        real_write_json(path, value)

    if fault == "move":
        monkeypatch.setattr(publish, "move", fails)
    else:
        monkeypatch.setattr(publish, "write_json", dies_recording_the_line)
    assert main(["publish", *common]) == 1
    assert len(disclosures(lake)) == logged_before + (fault == "move")  # logged before the move was tried
    monkeypatch.setattr(publish, "move", real_move)
    monkeypatch.setattr(publish, "write_json", real_write_json)
    assert main(["publish", *common]) == 0
    assert len(disclosures(lake)) == logged_before + 1
    [line] = [d for d in disclosures(lake) if d["run_id"] == run_id]
    published = json.loads(Path(lake.step_state("orders-to-acme_ads", run_id, "publish")).read_text())
    assert published["disclosure"] == line and line["version"] == published["version"] == run_id


def test_a_share_retried_after_a_newer_export_logs_that_it_was_not_exported(lake, beta_policy, monkeypatch):
    """An attempt logged its disclosure and stopped before the move; a newer judgement was
    exported meanwhile, so the retry refuses to hand the older one over. The log says so
    under the same line: no customer is counted as disclosed by an export never made."""
    import transforms.publish as publish

    overtaken = ["--policy", str(beta_policy), "--lake", lake.root, "--run-date", "2026-11-28", "--run-id", "overtaken"]
    assert main(["enforce", *overtaken]) == 0 and main(["validate", *overtaken]) == 0
    real_move = publish.move

    def fails(*args):
        raise OSError("no space left")

    monkeypatch.setattr(publish, "move", fails)
    assert main(["publish", *overtaken]) == 1
    monkeypatch.setattr(publish, "move", real_move)
    [logged] = [d for d in disclosures(lake) if d["run_id"] == "overtaken"]
    run(lake, beta_policy, "overtaking")  # the same t, from inputs read later

    assert main(["publish", *overtaken]) == 2
    first, refused = [d for d in disclosures(lake) if d["run_id"] == "overtaken"]
    assert first == logged
    assert refused.pop("not_exported").startswith("run overtaken read its inputs at ")
    assert {k: v for k, v in refused.items() if k not in ("at", "user")} == {
        k: v for k, v in logged.items() if k not in ("at", "user")
    }
    exports = Path(lake.root) / "exports" / "beta_media" / "orders"
    assert (exports / "CURRENT").read_text().strip() == "overtaking" and not (exports / "overtaken").exists()
    assert main(["publish", *overtaken]) == 2  # and a second retry logs nothing again
    assert len([d for d in disclosures(lake) if d["run_id"] == "overtaken"]) == 2
