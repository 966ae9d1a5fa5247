"""The disclosure log's last line for an export says whether it was handed over: a
share run that logged its line and then could not make the export current appends
``not_exported`` under it, and an export made after all is logged again."""

from __future__ import annotations

import json
from pathlib import Path

from transforms.lake import Lake
from transforms.share import log_disclosure, log_not_exported
from transforms.steps import PUBLISHING
from transforms.storage import write_json

EXPORT = "orders-to-acme_ads"
LINE = {"at": "2026-12-01T10:00:00+00:00", "user": "etl", "export": EXPORT, "version": "r1", "rows": 3, "subjects": 2}


def lines(lake: Lake) -> list[dict]:
    return [json.loads(line) for line in Path(lake.disclosure_log).read_text().splitlines()]


def test_an_export_not_made_current_is_said_so_and_logged_again_when_made(tmp_path):
    lake = Lake.at(str(tmp_path))
    write_json(lake.step_state(EXPORT, "r1", PUBLISHING), {"version": "r1", "disclosure": LINE, "pointed": False})
    log_disclosure(lake, LINE)
    log_disclosure(lake, LINE)  # a retry after a crash between appending and recording it
    assert [e.get("not_exported") for e in lines(lake)] == [None]

    log_not_exported(lake, EXPORT, "r1", "superseded")
    log_not_exported(lake, EXPORT, "r1", "superseded")  # said once
    assert [e.get("not_exported") for e in lines(lake)] == [None, "superseded"]

    log_disclosure(lake, LINE)  # made current after all (enforced and validated again)
    assert [e.get("not_exported") for e in lines(lake)] == [None, "superseded", None]
    assert all((e["rows"], e["subjects"], e["version"]) == (3, 2, "r1") for e in lines(lake))

    write_json(lake.step_state(EXPORT, "r1", PUBLISHING), {"version": "r1", "disclosure": LINE, "pointed": True})
    log_not_exported(lake, EXPORT, "r1", "too late")  # it may have been current: nothing said
    assert len(lines(lake)) == 3


def test_a_run_that_logged_nothing_says_nothing(tmp_path):
    lake = Lake.at(str(tmp_path))
    log_not_exported(lake, EXPORT, "r2", "expired")
    write_json(lake.step_state(EXPORT, "r2", PUBLISHING), {"version": "r2", "disclosure": None, "pointed": False})
    log_not_exported(lake, EXPORT, "r2", "expired")
    assert not Path(lake.disclosure_log).exists()


def test_after_a_torn_last_line_the_entry_has_a_line_of_its_own(tmp_path):
    lake = Lake.at(str(tmp_path))
    Path(lake.disclosure_log).parent.mkdir(parents=True)
    Path(lake.disclosure_log).write_text('{"export": "cut sh')
    log_disclosure(lake, LINE)
    text = Path(lake.disclosure_log).read_text().splitlines()
    assert len(text) == 2 and json.loads(text[1])["version"] == "r1"
