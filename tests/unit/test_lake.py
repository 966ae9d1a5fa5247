from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from transforms.airflow_dag import consentgate_run_id
from transforms.errors import ConsentgateError
from transforms.lake import Lake, check_run_id, judgement_instant, parse_run_date


def test_run_judges_at_the_end_of_its_run_date_in_utc():
    assert judgement_instant(date(2026, 11, 28)) == datetime(2026, 11, 29, tzinfo=UTC)


def test_bad_run_date_and_run_id_are_refused():
    with pytest.raises(ConsentgateError, match="'2026-13-01'"):
        parse_run_date("2026-13-01")
    with pytest.raises(ConsentgateError, match="run id"):
        check_run_id("../etc")


def test_airflow_run_ids_become_folder_names():
    assert consentgate_run_id("manual__2026-11-29T02:13:03.876043+00:00") == "manual__2026-11-29T021303.876043Z"
    assert check_run_id(consentgate_run_id("scheduled__2026-11-28T00:00:00+00:00"))


def test_lake_layout_matches_the_contract(tmp_path):
    lake = Lake.at(str(tmp_path))
    assert lake.consent == f"{tmp_path}/raw/consent"
    assert lake.staging_data("orders", "r1") == f"{tmp_path}/staging/orders/r1/data"
    assert lake.report_json("orders", "r1") == f"{tmp_path}/reports/orders/r1.json"
    remote = Lake.at("s3a://bucket/lake/")
    assert remote.clean_version("orders", "v1") == "s3a://bucket/lake/clean/orders/v1"
    assert not remote.is_local


def test_a_share_is_handed_over_under_exports_and_logged_lake_wide(tmp_path):
    from transforms.lake import export_name, split_export

    lake = Lake.at(str(tmp_path))
    name = export_name("orders", "acme_ads")
    assert split_export(name) == ("orders", "acme_ads") and split_export("orders") is None
    assert lake.clean_version(name, "s1") == f"{tmp_path}/exports/acme_ads/orders/s1"
    assert lake.current_pointer(name) == f"{tmp_path}/exports/acme_ads/orders/CURRENT"
    assert lake.staging_data(name, "s1") == f"{tmp_path}/staging/orders-to-acme_ads/s1/data"
    assert lake.current_pointer("orders") == f"{tmp_path}/clean/orders/CURRENT"
    assert lake.disclosure_log == f"{tmp_path}/reports/disclosures.jsonl"
