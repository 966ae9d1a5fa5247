"""`consentgate lint` and `consentgate register`: findings on hand-written policies, and
the register kept in docs/ must be what the policies in dags/policies give now."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO
from transforms.cli import main
from transforms.errors import PolicyError
from transforms.register import render
from transforms.rules import RULES, parse_rule

HEAD = """\
dataset: {dataset}
source: raw/orders
subject_key: customer_id
event_time: ordered_at
purpose: analytics
columns:
  customer_id: {{consented: pseudonymize, anonymized: drop, category: identifier}}
  ordered_at: {{consented: keep, anonymized: generalize:month, category: behaviour, note: the event counted}}
"""


def policy(folder: Path, name: str, extra_columns: str = "", dataset: str = "orders") -> Path:
    path = folder / f"{name}.yml"
    path.write_text(HEAD.format(dataset=dataset) + extra_columns)
    return path


def lint(capsys, *args) -> tuple[int, list[str]]:
    status = main(["lint", *map(str, args)])
    return status, capsys.readouterr().out.splitlines()


def test_the_shipped_policies_have_no_findings(capsys):
    assert lint(capsys, REPO / "dags" / "policies") == (0, [])


def test_each_kind_of_finding_is_one_line_naming_file_and_column(tmp_path, capsys):
    good = policy(tmp_path, "a_good")
    policy(tmp_path, "b_uncategorised", "  channel: keep\n", dataset="b")
    policy(tmp_path, "c_kept_without_note", "  zip_code: {rule: keep, category: address}\n", dataset="c")
    policy(tmp_path, "d_misnamed", "  email: {rule: keep, category: none}\n", dataset="d")
    policy(tmp_path, "e_same_dataset", "", dataset="orders")
    (tmp_path / "f_broken.yml").write_text(HEAD.format(dataset="f") + "  email: {consented: hash}\n")
    policy(tmp_path, "g_dropped_needs_nothing", "  full_name: drop\n", dataset="g")
    policy(tmp_path, "h_noted", "  zip_code: {rule: keep, category: address, note: area sales}\n", dataset="h")
    # Names of one word ("zipcode"); the subject key said to be no personal data.
    policy(tmp_path, "i_compound", "  zipcode: {rule: keep, category: none}\n", dataset="i")
    (tmp_path / "j_key.yml").write_text(
        HEAD.format(dataset="j").replace("anonymized: drop, category: identifier", "anonymized: drop, category: none")
    )
    # A row's own id kept in anonymised rows, without saying who can read the source.
    policy(tmp_path, "k_linkable", "  order_id: {rule: keep, category: none}\n", dataset="k")
    # Named twice on the command line (folder and file): linted once.
    status, lines = lint(capsys, tmp_path, good)
    assert status == 2
    assert lines == [
        f"{tmp_path}/b_uncategorised.yml: columns.channel: no category: declare what it holds "
        "(identifier | contact | name | address | demographic | location | online | financial | behaviour | "
        "free_text | special | none)",
        f"{tmp_path}/c_kept_without_note.yml: columns.zip_code: personal data (address) is kept as it is in "
        "consented rows and anonymized rows: add a note saying why, or pseudonymise, mask, generalise or drop it",
        f"{tmp_path}/d_misnamed.yml: columns.email: the name suggests personal data, but the category is none",
        f"{tmp_path}/e_same_dataset.yml: dataset: 'orders' is also the dataset of {good}",
        f"{tmp_path}/f_broken.yml: columns.email.consented: unknown rule 'hash' (known: date_shift, drop, encrypt, "
        "generalize, keep, mask, pseudonymize, redact, scrub_text)",
        f"{tmp_path}/i_compound.yml: columns.zipcode: the name suggests personal data, but the category is none",
        f"{tmp_path}/j_key.yml: columns.customer_id: the subject key identifies a person, but the category is none",
        f"{tmp_path}/k_linkable.yml: columns.order_id: anonymised rows keep this id as it is, which links each to "
        "its source row and so to the customer for whoever reads the source: drop it there, or add a note saying "
        "who can",
    ]


def test_with_a_lake_the_source_schema_is_checked_without_spark(tmp_path, capsys):
    source = tmp_path / "lake" / "raw" / "orders"
    source.mkdir(parents=True)
    table = pa.table({"customer_id": pa.array(["c1"]), "ordered_at": pa.array(["2026-11-01"]), "phone": [5551234]})
    pq.write_table(table, source / "part-0.parquet")
    path = policy(tmp_path, "orders", "  phone: {consented: mask, anonymized: drop, category: contact}\n")
    status, lines = lint(capsys, path, "--lake", tmp_path / "lake")
    assert status == 2
    # The first problem the enforce job would stop at (the phone's type would be the next).
    assert lines == [
        f"{path}: source: {source}: event time column 'ordered_at' is string, expected a date or timestamp"
    ]


def test_with_a_lake_a_source_written_by_month_has_its_month_column(tmp_path, capsys):
    """As Spark reads it (order_month=2026-11-01/ folders): the month is declared and found."""
    from datetime import datetime

    source = tmp_path / "lake" / "raw" / "orders" / "order_month=2026-11-01"
    source.mkdir(parents=True)
    table = pa.table({"customer_id": pa.array(["c1"]), "ordered_at": pa.array([datetime(2026, 11, 1)])})
    pq.write_table(table, source / "part-0.parquet")
    path = policy(tmp_path, "orders", "  order_month: {rule: keep, category: none}\n")
    assert lint(capsys, path, "--lake", tmp_path / "lake") == (0, [])


def test_an_empty_folder_is_an_error(tmp_path, capsys):
    assert main(["lint", str(tmp_path)]) == 2
    assert "no policy files" in capsys.readouterr().err


def test_every_rule_describes_itself_for_the_register():
    examples = {"mask": "mask:2", "generalize": "generalize:prefix3", "date_shift": "date_shift:30"}
    for name in RULES:
        assert parse_rule(examples.get(name, name)).description, name


def test_the_register_in_docs_is_current(monkeypatch):
    monkeypatch.chdir(REPO)
    for name, content in render("dags/policies").items():
        kept = (REPO / "docs" / name).read_text(encoding="utf-8")
        assert kept == content, f"docs/{name} is stale: run `consentgate register`"


def test_the_register_states_purpose_treatment_retention_and_policy_hash(monkeypatch):
    from transforms.policy import load_policy

    monkeypatch.chdir(REPO)
    markdown = render("dags/policies")["register.md"]
    orders = load_policy("dags/policies/orders.yml")
    assert "| Purpose | `analytics` |" in markdown
    assert "| email | contact | pseudonymised (keyed HMAC-SHA256) | not published |  |" in markdown
    assert (
        "| Retention | 730 days from the event, then dropped from what is published (the source in `raw/` is kept by "
        "the system that writes it); the last 5 published versions are kept;" in markdown
    )
    assert f"(sha256 `{orders.sha256}`)" in markdown


def test_a_register_of_no_policies_is_refused(tmp_path, capsys):
    assert main(["register", "--policies", str(tmp_path), "--out", str(tmp_path / "docs")]) == 2
    assert "no policy files" in capsys.readouterr().err and not (tmp_path / "docs").exists()


def test_a_changed_policy_makes_the_register_stale(tmp_path, capsys):
    policies, out = tmp_path / "policies", tmp_path / "docs"
    policies.mkdir()
    path = policy(policies, "orders")
    assert main(["register", "--policies", str(policies), "--out", str(out)]) == 0
    assert main(["register", "--policies", str(policies), "--out", str(out), "--check"]) == 0
    path.write_text(path.read_text().replace("note: the event counted", "note: the event that is counted"))
    assert main(["register", "--policies", str(policies), "--out", str(out), "--check"]) == 2
    assert f"{out}/register.md, {out}/register.html: stale" in capsys.readouterr().err


@pytest.mark.parametrize(
    "bad",
    ["{consented: keep, category: secret}", "{rule: keep, consented: drop}", "{rule: keep, category: [contact]}"],
)
def test_column_metadata_is_checked_when_the_policy_loads(tmp_path, capsys, bad):
    policy(tmp_path, "orders", f"  channel: {bad}\n")
    status, lines = lint(capsys, tmp_path)
    assert status == 2 and len(lines) == 1 and "columns.channel" in lines[0]


SHARE = """\
kind: share
dataset: {dataset}
recipient: {recipient}
purpose: share:{recipient}
source: raw/orders
subject_key: customer_id
event_time: ordered_at
columns:
  customer_id: {{rule: pseudonymize, category: identifier}}
"""


def test_two_shares_whose_dags_would_share_an_id_are_a_finding(tmp_path, capsys):
    (tmp_path / "a.yml").write_text(SHARE.format(dataset="a_to_b", recipient="c"))
    (tmp_path / "b.yml").write_text(SHARE.format(dataset="a", recipient="b_to_c"))
    assert lint(capsys, tmp_path) == (
        2,
        [f"{tmp_path}/b.yml: recipient: DAG id 'share_a_to_b_to_c' is also that of {tmp_path}/a.yml"],
    )


def test_policies_that_normalise_subject_keys_differently_are_a_finding(tmp_path, capsys):
    (tmp_path / "a.yml").write_text(SHARE.format(dataset="a", recipient="b"))
    (tmp_path / "c.yml").write_text(SHARE.format(dataset="c", recipient="d") + "subject_key_normalize: [lower]\n")
    assert lint(capsys, tmp_path) == (
        2,
        [
            f"{tmp_path}/c.yml: subject_key_normalize: [lower] differs from [] of {tmp_path}/a.yml: the datasets "
            "of one lake share erasure tombstones, so their runs would stop"
        ],
    )


def test_the_register_lists_each_share_as_a_disclosure_and_the_datasets_recipients(monkeypatch):
    monkeypatch.chdir(REPO)
    markdown = render("dags/policies")["register.md"]
    assert "## orders shared with acme_ads" in markdown
    assert "| Recipient | acme_ads (third party) |" in markdown
    assert "| customer_id | identifier | pseudonymised (keyed HMAC-SHA256) | not exported |  |" in markdown
    assert "third parties: acme_ads (only customers who consented to `share:acme_ads`; see its section)" in markdown
    assert "`clean.customers`; third parties: none |" in markdown


def test_an_id_a_share_exports_as_it_is_is_a_finding(tmp_path, capsys):
    """Two recipients' copies, and clean.orders, would join on it."""
    text = (REPO / "dags" / "policies" / "orders_to_acme_ads.yml").read_text()
    kept = re.sub(r"(?m)^  order_id:\n(    .*\n)+", "  order_id: {rule: keep, category: none}\n", text)
    assert kept != text
    (tmp_path / "share.yml").write_text(kept)
    assert lint(capsys, tmp_path) == (
        2,
        [
            f"{tmp_path}/share.yml: columns.order_id: a share exports this id as it is: every recipient gets the "
            "same value, so their copies (and clean.orders) join on it; pseudonymise it"
        ],
    )


def test_the_register_names_the_controller_dpo_transfers_and_security_measures(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    markdown = render("dags/policies")["register.md"]
    assert "| Controller | Example Shop Ltd (the demo's fictitious controller) (1 Example Street, Leeds;" in markdown
    assert "| Data protection officer | Data Protection Officer of Example Shop (dpo@example.com) |" in markdown
    assert "| Transfers to third countries | none outside the EEA" in markdown
    assert "keyed HMAC-SHA256" in markdown and "access to raw/ is granted to data engineers only" in markdown
    assert "from the 3 policies" in markdown  # the controller's section is not a policy
    # By default the file beside the policies' folder, whatever the current folder.
    monkeypatch.chdir(tmp_path)
    assert render(str(REPO / "dags" / "policies"))["register.md"].count("Example Shop Ltd") == 1
    policies = tmp_path / "policies"
    policies.mkdir()
    policy(policies, "orders")
    unstated = render(str(policies))["register.md"]
    assert "| Controller | not stated (write controller.yml beside the policies' folder, or give --controller) |" in (
        unstated
    )
    with pytest.raises(PolicyError, match="absent.yml: cannot read the controller file"):
        render(str(policies), None, str(tmp_path / "absent.yml"))  # named, so it must be there


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("controller: {name: A}\n", "controller: must be {name: ..., contact: ...}"),
        ("dpo: {name: B, contact: b@example.org}\n", "controller: must be {name: ..., contact: ...}"),
        ("controller: {name: A, contact: a}\nowner: me\n", "owner: unknown key"),
        ("controller: {name: A, contact: a}\nsecurity_measures: locked doors\n", "security_measures: must be a list"),
    ],
)
def test_a_bad_controller_file_stops_the_register_naming_the_key(tmp_path, capsys, text, message):
    controller = tmp_path / "controller.yml"
    controller.write_text(text)
    args = ["register", "--policies", str(REPO / "dags" / "policies"), "--out", str(tmp_path / "docs")]
    assert main([*args, "--controller", str(controller)]) == 2
    err = capsys.readouterr().err
    assert err == f"consentgate: {controller}: {message}" + err.split(message, 1)[1] and err.count("\n") == 1
    assert not (tmp_path / "docs").exists()


def test_policy_text_is_text_in_the_markdown_register(tmp_path):
    policies = tmp_path / "policies"
    policies.mkdir()
    note = "<img src=x> a | b ![t](http://e/p.png) **bold**"
    policy(policies, "orders", f"  channel: {{rule: keep, category: none, note: '{note}'}}\n")
    markdown = render(str(policies), None, None)["register.md"]
    assert "| &lt;img src=x&gt; a \\| b \\!\\[t\\](http://e/p.png) \\*\\*bold\\*\\* |" in markdown
    assert "<img" not in markdown
