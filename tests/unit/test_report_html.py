"""The run's HTML page says what happened: a run that did not publish says why, and a
share that was not handed over is not shown as shared."""

from __future__ import annotations

from transforms.report_html import render_report

SHARE = {"dataset": "orders", "purpose": "share:acme_ads", "recipient": "acme_ads", "subjects": 3}
RUN = {
    "run_id": "tuesday",
    "dataset": "orders-to-acme_ads",
    "run_date": "2026-11-28",
    "rows_in": 10,
    "rows_out": 4,
    "published": False,
    "table": None,
    "share": {**SHARE, "recipient_key_fingerprint": "ac4657006b80cc2e"},
    "totals": {"kept": 4, "anonymized": 0, "dropped": 6, "quarantined": 0},
    "counts": {"consented": {"kept": 4}, "no_consent": {"dropped": 6}},
    "validation": {
        "success": False,
        "evaluated": 20,
        "failed": ["expect_table_row_count_to_equal(all)"],
        "expectations": [],
    },
    "timings": {},
}
STOPPED = {"run_id": "monday", "dataset": "orders-to-acme_ads", "run_date": "2026-11-27", "rows_in": None}


def test_a_share_that_failed_validation_is_not_shown_as_shared():
    page = render_report(RUN, [STOPPED, RUN])
    assert (
        "NOT published (4 of 10 input rows were staged): validation failed: expect_table_row_count_to_equal(all)"
        in page
    )
    assert "Shared with" not in page and "None" not in page.split("id='outcome'")[1].split("</p>")[0]
    # The run that stopped before judging is in the recent runs, marked as not published.
    assert "<td>monday</td>" in page.split("id='trend'")[1]
    assert page.split("id='trend-chart'")[1].split("</svg>")[0].count("✗") == 2


def test_a_superseded_or_failed_publish_says_so():
    superseded = {
        **RUN,
        "validation": {"success": True, "evaluated": 20, "failed": [], "expectations": []},
        "superseded_by": "wednesday",
    }
    assert "judged before the current version wednesday, which stays" in render_report(superseded)
    failed = {
        **RUN,
        "validation": {"success": True, "evaluated": 20, "failed": [], "expectations": []},
        "publish_error": "the catalog could not be reached",
    }
    assert "NOT published (4 of 10 input rows were staged): the catalog could not be reached" in render_report(failed)
    published = {
        **RUN,
        "published": True,
        "validation": {"success": True, "evaluated": 20, "failed": [], "expectations": []},
        "disclosure": {"at": "x"},
    }
    page = render_report(published)
    assert "published: 4 of 10 input rows in the export to acme_ads" in page and "Shared with acme_ads" in page
