from __future__ import annotations

import re

import pytest

from tests.conftest import ORDERS_POLICY
from transforms.errors import PolicyError
from transforms.policy import CheckConsentAt, OnNoConsent, load_policy

BASE = """\
dataset: orders
source: raw/orders
subject_key: customer_id
event_time: ordered_at
purpose: analytics
columns:
  customer_id: {consented: pseudonymize, anonymized: drop}
  ordered_at: keep
"""


def write(tmp_path, text: str):
    path = tmp_path / "policy.yml"
    path.write_text(text)
    return path


def test_orders_policy_loads_with_declared_rules():
    policy = load_policy(ORDERS_POLICY)
    assert policy.dataset == "orders"
    assert policy.check_consent_at is CheckConsentAt.RUN
    assert policy.on_no_consent is OnNoConsent.ANONYMIZE
    rules = {c.name: (c.consented.text, c.anonymized.text) for c in policy.columns}
    assert rules["customer_id"] == ("pseudonymize", "drop")
    assert rules["birth_date"] == ("generalize:year", "drop")
    assert rules["zip_code"] == ("keep", "generalize:prefix3")
    assert "full_name" not in {c.name for c in policy.output_columns}
    assert len(policy.sha256) == 64


def test_state_left_out_of_a_column_mapping_is_dropped(tmp_path):
    policy = load_policy(write(tmp_path, BASE + "  email: {consented: pseudonymize}\n"))
    assert policy.column("email").anonymized.text == "drop"


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ("colour: blue\n", "colour: unknown key"),
        ("on_no_consent: keep\n", "on_no_consent: 'keep' is not one of anonymize | drop"),
        ("retention_days: -3\n", "retention_days"),
        ("check_consent_at: sometimes\n", "check_consent_at"),
        ("subject_key_normalize: [upper]\n", "subject_key_normalize"),
    ],
)
def test_bad_top_level_values_name_the_key(tmp_path, extra, named):
    path = write(tmp_path, BASE + extra)
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert str(path) in str(err.value)
    assert named in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("column_line", "named"),
    [
        ("  email: scramble\n", "columns.email: unknown rule 'scramble'"),
        ("  email: {consented: keep, anonymized: pseudonymize}\n", "columns.email.anonymized"),
        ("  email: {consented: keep, anonymised: drop}\n", "columns.email: unknown key 'anonymised'"),
        ("  zip: generalize:prefix0\n", "columns.zip"),
        ("  zip: generalize:week\n", "columns.zip"),
        ("  phone: mask\n", "columns.phone"),
    ],
)
def test_bad_column_rules_name_the_column(tmp_path, column_line, named):
    with pytest.raises(PolicyError, match=named.replace("(", r"\(").replace("[", r"\[")):
        load_policy(write(tmp_path, BASE + column_line))


def test_subject_key_must_be_dropped_from_anonymised_rows(tmp_path):
    text = BASE.replace("customer_id: {consented: pseudonymize, anonymized: drop}", "customer_id: keep")
    with pytest.raises(PolicyError, match="columns.customer_id: the subject key must be dropped"):
        load_policy(write(tmp_path, text))


def test_missing_required_key_is_named(tmp_path):
    with pytest.raises(PolicyError, match="purpose: missing"):
        load_policy(write(tmp_path, BASE.replace("purpose: analytics\n", "")))


def test_unreadable_and_invalid_yaml_name_the_file(tmp_path):
    with pytest.raises(PolicyError, match="cannot read the policy"):
        load_policy(tmp_path / "absent.yml")
    with pytest.raises(PolicyError, match="line 2: not valid YAML"):
        load_policy(write(tmp_path, "dataset: orders\n  source: [\n"))


def test_a_key_given_twice_is_refused_rather_than_the_last_one_winning(tmp_path):
    pasted_below = BASE + "  customer_id: keep\n"
    where = re.escape(str(tmp_path / "policy.yml"))
    with pytest.raises(PolicyError, match=rf"^{where}: line 9: customer_id: given twice$"):
        load_policy(write(tmp_path, pasted_below))
    with pytest.raises(PolicyError, match=r"line 2: on_no_consent: given twice$"):
        load_policy(write(tmp_path, "on_no_consent: drop\non_no_consent: anonymize\n" + BASE))


def test_merge_keys_still_share_rules_and_override_them(tmp_path):
    text = BASE.replace("  ordered_at: keep\n", "  ordered_at: &kept {rule: keep, category: none}\n")
    text += "  channel: {<<: *kept, note: Web or app.}\n  amount: {<<: *kept, rule: drop}\n"
    policy = load_policy(write(tmp_path, text))
    rules = {c.name: (c.consented.text, c.anonymized.text, c.note) for c in policy.columns}
    assert rules["channel"] == ("keep", "keep", "Web or app.")
    assert rules["amount"] == ("drop", "drop", "")


def test_subject_key_must_stay_matchable_for_erasure(tmp_path):
    text = BASE.replace("customer_id: {consented: pseudonymize, anonymized: drop}", "customer_id: {consented: mask}")
    with pytest.raises(PolicyError, match="columns.customer_id: the subject key may only be kept, pseudonymised"):
        load_policy(write(tmp_path, text))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("quasi_identifiers: [zip]\n", "quasi_identifiers: 'zip' is not a declared column"),
        ("quasi_identifiers: []\n", "quasi_identifiers: must be a non-empty list"),
        ("quasi_identifiers: [ordered_at, ordered_at]\n", "names a column twice"),
        ("quasi_identifiers: [ordered_at]\nk_min: 1\n", "k_min: 1 must be a whole number of at least 2"),
        ("k_min: 5\n", "k_min: needs quasi_identifiers"),
    ],
)
def test_k_anonymity_settings_are_checked(tmp_path, extra, message):
    with pytest.raises(PolicyError, match=message):
        load_policy(write(tmp_path, BASE + extra))


def test_k_anonymity_defaults_to_five(tmp_path):
    policy = load_policy(write(tmp_path, BASE + "quasi_identifiers: [ordered_at]\n"))
    assert (policy.quasi_identifiers, policy.k_min) == (("ordered_at",), 5)
    assert load_policy(write(tmp_path, BASE)).quasi_identifiers == ()


@pytest.mark.parametrize("rule", ["encrypt", "date_shift:30", "mask:2"])
def test_rules_that_link_to_a_subject_are_refused_in_anonymised_rows(tmp_path, rule):
    text = BASE + f"  email: {{consented: {rule}, anonymized: {rule}}}\n"
    with pytest.raises(PolicyError, match=r"columns.email.anonymized: .* links a row to its subject"):
        load_policy(write(tmp_path, text))


def test_only_a_policy_that_encrypts_needs_the_encryption_key(tmp_path):
    assert not load_policy(write(tmp_path, BASE)).needs_encryption_key
    text = BASE + "  email: {consented: encrypt, anonymized: drop}\n"
    assert load_policy(write(tmp_path, text)).needs_encryption_key


def test_a_column_linked_to_its_subject_needs_a_matchable_subject_key(tmp_path):
    text = BASE.replace("customer_id: {consented: pseudonymize, anonymized: drop}", "customer_id: drop")
    with pytest.raises(PolicyError, match="columns.customer_id: the subject key must be kept or pseudonymised"):
        load_policy(write(tmp_path, text + "  email: {consented: encrypt, anonymized: drop}\n"))
    load_policy(write(tmp_path, text + "  email: {consented: redact, anonymized: drop}\n"))


@pytest.mark.parametrize("key", ["keep_versions", "quarantine_retention_days"])
def test_retention_counts_are_positive_whole_numbers(tmp_path, key):
    assert getattr(load_policy(write(tmp_path, BASE + f"{key}: 3\n")), key) == 3
    for bad in ("0", "-1", "two", "true"):
        with pytest.raises(PolicyError, match=f"{key}: .* must be a whole number (of at least 1|from 1 to 36500)"):
            load_policy(write(tmp_path, BASE + f"{key}: {bad}\n"))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        # YAML 1.1 would read these as 24 (octal), 90 (base 60) and 1000.
        ("retention_days: 030", "retention_days: '030' must be a whole number of days from 1 to 36500"),
        ("retention_days: 1:30", "retention_days: '1:30' must be a whole number of days from 1 to 36500"),
        ("keep_versions: 1_000", "keep_versions: '1_000' must be a whole number of at least 1"),
        ("tcf: {column: tc, purposes: [010]}", "tcf.purposes: .'010'. must be a non-empty list of distinct"),
        ("tcf: {column: tc, purposes: [1, 1]}", "tcf.purposes: .1, 1. must be a non-empty list of distinct"),
        ("tcf: {column: '', purposes: [1]}", "tcf.column: '' must name the column of TC strings"),
        # Left empty, these meant no limit and no TCF check.
        ("retention_days:", "retention_days: is empty: give it a value, or leave the key out for its default"),
        ("tcf:", "tcf: is empty"),
        # A day count past the calendar's end stopped the run when it computed its cut-off.
        ("retention_days: 999999", "retention_days: 999999 must be a whole number of days from 1 to 36500"),
        ("quarantine_retention_days: 40000", "quarantine_retention_days: 40000 must be a whole number from 1 to"),
        ("subject_key_normalize: [lower, lower]", "subject_key_normalize: must be a list naming each step once"),
        ("subject_key_normalize: no", "subject_key_normalize: must be a list naming each step once"),
        ("description: 12", "description: 12 must be text"),
        # YAML reads `on` as true; two unknown keys of different types crashed the sort.
        ("on: 1\ntypo: 2", "True: unknown key"),
    ],
)
def test_yaml_s_surprises_are_refused_rather_than_read_as_something_else(tmp_path, line, message):
    with pytest.raises(PolicyError, match=message):
        load_policy(write(tmp_path, BASE + line + "\n"))


def test_a_merge_of_two_mappings_is_refused_as_its_result_depends_on_the_yaml_library(tmp_path):
    text = BASE.replace("  ordered_at: keep\n", "  ordered_at: &kept {rule: keep}\n  channel: &dropped {rule: drop}\n")
    for merge in ("{<<: [*dropped, *kept]}", "{<<: *dropped, <<: *kept}"):
        with pytest.raises(PolicyError, match=r"line \d+: <<: merge one mapping, once"):
            load_policy(write(tmp_path, text + f"  amount: {merge}\n"))


SHARE = """\
kind: share
dataset: orders
recipient: acme_ads
purpose: share:acme_ads
source: raw/orders
subject_key: customer_id
event_time: ordered_at
columns:
  customer_id: {rule: pseudonymize, category: identifier}
  ordered_at: {rule: "generalize:day", category: behaviour}
"""


ORDERED_AT = 'ordered_at: {rule: "generalize:day", category: behaviour}'


def test_a_share_exports_consented_rows_under_its_own_name(tmp_path):
    policy = load_policy(write(tmp_path, SHARE))
    assert (policy.dataset, policy.shared_dataset, policy.recipient) == ("orders-to-acme_ads", "orders", "acme_ads")
    assert policy.dag_id == "share_orders_to_acme_ads"
    assert policy.on_no_consent is OnNoConsent.DROP and policy.sale_or_sharing
    # One rule per column: the consented rows'; nothing is exported anonymised.
    assert [(c.consented.text, c.anonymized.text) for c in policy.columns] == [
        ("pseudonymize", "drop"),
        ("generalize:day", "drop"),
    ]
    assert load_policy(ORDERS_POLICY).dag_id == "privacy_orders"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (("recipient: acme_ads", "recipient: Acme Ads"), "recipient: 'Acme Ads' must be a name"),
        (("purpose: share:acme_ads", "purpose: share:other"), "purpose: 'share:other': a share to acme_ads"),
        (("kind: share\n", "kind: sharing\n"), "kind: 'sharing' is not one of processing | share"),
        (("columns:", "on_no_consent: anonymize\ncolumns:"), "on_no_consent: 'anonymize': a share exports"),
        (("columns:", "on_retention_expired: anonymize\ncolumns:"), "on_retention_expired: 'anonymize'"),
        (("columns:", "quasi_identifiers: [ordered_at]\ncolumns:"), "quasi_identifiers: a share exports no"),
        (("columns:", "sale_or_sharing: false\ncolumns:"), "sale_or_sharing: a share is sharing"),
        (("columns:", "keep_versions: 2\ncolumns:"), "keep_versions: 2: a share keeps only its current export"),
        (("columns:", "partition_by: month\ncolumns:"), "partition_by: a share's export is one folder"),
        (("{rule: pseudonymize,", "{consented: pseudonymize,"), "columns.customer_id: a recipient gets its own"),
        (("{rule: pseudonymize,", "{rule: keep,"), "columns.customer_id: a recipient gets its own pseudonym"),
        (("{rule: pseudonymize,", "{rule: drop,"), "columns.customer_id: a recipient gets its own pseudonym"),
        (
            (ORDERED_AT, "ordered_at: {consented: keep}"),
            "columns.ordered_at: unknown key 'consented'",
        ),
        (('"generalize:day"', "encrypt"), "columns.ordered_at.rule: a recipient cannot decrypt"),
        ((ORDERED_AT, "email: keep"), "columns.email: a column exported to a third party needs"),
        (
            (ORDERED_AT, "email: {rule: keep, category: contact}"),
            "columns.email.rule: a column of category contact exported as 'keep' would let two recipients join",
        ),  # fmt: skip
        ((ORDERED_AT, "email: {rule: 'mask:8', category: contact}"), "exported as 'mask:8'"),
        ((ORDERED_AT, "ip: {rule: 'generalize:prefix9', category: online}"), "columns.ip.rule"),
    ],
)
def test_a_share_refuses_what_would_leak_beyond_consent(tmp_path, change, named):
    with pytest.raises(PolicyError, match=re.escape(named)):
        load_policy(write(tmp_path, SHARE.replace(*change)))


def test_a_share_may_mask_or_redact_an_identifier_and_needs_a_recipient_to_be_one(tmp_path):
    text = SHARE.replace(ORDERED_AT, "email: {rule: mask, category: contact}")
    assert load_policy(write(tmp_path, text)).column("email").consented.text == "mask"
    with pytest.raises(PolicyError, match="recipient: only a share"):
        load_policy(write(tmp_path, SHARE.replace("kind: share\n", "")))


def test_orders_are_published_by_month():
    policy = load_policy(ORDERS_POLICY)
    assert (policy.partition_by, policy.partition_column) == ("month", "ordered_at_month")


@pytest.mark.parametrize(
    ("rule", "period", "allowed"),
    [
        ("keep", "day", True),
        ("{consented: keep, anonymized: generalize:month}", "month", True),
        ("{consented: keep, anonymized: generalize:month}", "year", True),
        ("{consented: keep, anonymized: generalize:month}", "day", False),  # would publish the day
        ("{consented: generalize:year, anonymized: generalize:month}", "month", False),
        ("{consented: keep, anonymized: drop}", "month", False),  # anonymised rows keep no date
        ("{consented: date_shift:30, anonymized: generalize:month}", "month", False),  # the true month
        ("keep", "week", False),
    ],
)
def test_the_partition_publishes_no_more_of_the_event_time_than_its_rules(tmp_path, rule, period, allowed):
    text = BASE.replace("  ordered_at: keep\n", f"  ordered_at: {rule}\n") + f"partition_by: {period}\n"
    if allowed:
        assert load_policy(write(tmp_path, text)).partition_column == f"ordered_at_{period}"
    else:
        with pytest.raises(PolicyError, match=r"policy\.yml: partition_by: "):
            load_policy(write(tmp_path, text))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("../elsewhere", "must be a folder of the lake named from its root"),
        ("/data/orders", "must be a folder of the lake named from its root"),
        ("s3a://bucket/orders", "must be a folder of the lake named from its root"),
        ("raw/./orders", "must be a folder of the lake named from its root"),
        ("quarantine/orders", "is one of the lake's own folders"),
        ("clean/orders", "is one of the lake's own folders"),
        ("raw/consent", "is one of the lake's own folders"),
        ("raw/erasure_requests/2026", "is one of the lake's own folders"),
        ("raw", "is one of the lake's own folders"),
        ("locks", "is one of the lake's own folders"),
    ],
)
def test_the_source_is_a_folder_of_the_lake_outside_its_own(tmp_path, source, message):
    with pytest.raises(PolicyError, match=f"source: '{re.escape(source)}' {message}"):
        load_policy(write(tmp_path, BASE.replace("source: raw/orders", f"source: {source}")))
    assert (
        load_policy(write(tmp_path, BASE.replace("source: raw/orders", "source: raw/orders/"))).source == "raw/orders"
    )


@pytest.mark.parametrize("name", ['"a\\nb"', '" padded"', "_cg_reason"])
def test_a_column_name_that_would_break_messages_or_spark_is_refused(tmp_path, name):
    with pytest.raises(PolicyError, match="no control characters, surrounding blanks or _cg_ prefix"):
        load_policy(write(tmp_path, BASE + f"  {name}: keep\n"))
