"""reports/index.html shows each dataset's latest run, a failed one included, and one
damaged old report does not stop the next."""

from __future__ import annotations

import re
from pathlib import Path

from transforms.lake import Lake
from transforms.report import write_index, write_report
from transforms.steps import record_failure
from transforms.storage import write_json

PUBLISHED = {
    "run_id": "monday",
    "dataset": "orders",
    "run_date": "2026-11-27",
    "judged_at": "2026-11-28T00:00:00+00:00",
    "reported_at": "2001-01-01T00:10:00+00:00",  # before any clock the tests run under
    "published": True,
    "rows_in": 10,
    "totals": {"kept": 4, "anonymized": 3, "dropped": 2, "quarantined": 1},
    "validation": {"success": True},
}


def rows_of(index: str) -> list[str]:
    return re.findall(r"<tr><td>(.*?)</tr>", index)


def test_a_later_failed_run_is_what_the_index_shows(tmp_path):
    lake = Lake.at(str(tmp_path))
    write_json(lake.report_json("orders", "monday"), PUBLISHED)
    (Path(lake.path("reports", "orders")) / "damaged.json").write_text("{not json")
    record_failure(lake, "orders", "tuesday", "enforce", "no pseudonymisation key: set CONSENTGATE_HMAC_KEY")
    write_report(lake, "orders", "tuesday")
    [row] = rows_of(Path(write_index(lake)).read_text())
    assert "<a href='orders/tuesday.html'>tuesday</a>" in row and "'bad'>NO</td>" in row
    assert Path(lake.path("reports", "orders", "tuesday.html")).read_text().count("no pseudonymisation key") == 1
