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
