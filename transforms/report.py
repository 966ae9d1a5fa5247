"""The run report: ``reports/<dataset>/<run_id>.json``, assembled from the steps' state.

Counts, hashes, paths and timings only: no value from the data ever reaches it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from transforms import __version__
from transforms.errors import StepStateError
from transforms.lake import Lake
from transforms.report_html import render_index, render_report
from transforms.steps import load_step
from transforms.storage import list_names, read_json, write_json, write_text

ACTIONS = ("kept", "anonymized", "dropped", "quarantined")
TREND_RUNS = 10


def check_reconciliation(rows_in: int, totals: dict[str, int]) -> None:
    """rows_in = kept + anonymized + dropped + quarantined, or the run is not trustworthy."""
    accounted = sum(totals.get(action, 0) for action in ACTIONS)
    if accounted != rows_in:
        raise StepStateError(f"counts do not reconcile: rows_in={rows_in}, accounted for={accounted}")


def build_report(lake: Lake, dataset: str, run_id: str) -> dict:
    enforce = load_step(lake, dataset, run_id, "enforce", required=False)
    validate = load_step(lake, dataset, run_id, "validate", required=False) or {}
    publish = load_step(lake, dataset, run_id, "publish", required=False) or {}
    if enforce is None or "rows_in" not in enforce:
        failed = enforce or {}
        # The fields every report has, with what a run that stopped before judging knows.
        return {
            "run_id": run_id,
            "dataset": dataset,
            "run_date": failed.get("run_date"),
            "policy_path": failed.get("policy_path"),
            "policy_sha256": failed.get("policy_sha256"),
            "rows_in": None,
            "rows_out": None,
            "counts": {},
            "validation": {"success": False, "evaluated": 0, "failed": [], "expectations": []},
            "published": False,
            "published_path": None,
            "error": failed.get("error", "the enforce step left no result"),
            "reported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "consentgate_version": __version__,
        }
    check_reconciliation(enforce["rows_in"], enforce["totals"])
    validation = {
        "success": bool(validate.get("success")),
        "evaluated": validate.get("evaluated", 0),
        "failed": validate.get("failed", []),
        "expectations": validate.get("expectations", []),
        "data_docs": validate.get("data_docs"),
    }
    if "error" in validate and not validate.get("expectations"):
        validation["error"] = validate["error"]
    report = {
        "run_id": run_id,
        "dataset": dataset,
        "run_date": enforce["run_date"],
        "judged_at": enforce["judged_at"],
        "inputs_read_at": enforce.get("inputs_read_at"),
        "policy_path": enforce["policy_path"],
        "policy_sha256": enforce["policy_sha256"],
        "key_fingerprint": enforce["key_fingerprint"],
        "key_version": enforce["key_version"],
        "keys": enforce.get("keys"),
        "key_rotation": enforce.get("key_rotation") or {},
        "retired_versions": publish.get("retired_versions", []),
        "removed_versions": publish.get("removed_versions", []),
        "quarantine_expired": enforce.get("quarantine_expired", []),
        "staging_expired": enforce.get("staging_expired", []),
        "k_anonymity": enforce.get("k_anonymity"),
        "rows_in": enforce["rows_in"],
        "rows_out": enforce["rows_out"],
        "totals": enforce["totals"],
        "counts": enforce["counts"],
        "consent_coverage": enforce.get("consent_coverage"),
        "lineage": enforce.get("lineage"),
        "validation": validation,
        "published": bool(publish.get("published")),
        "published_path": publish.get("published_path"),
        "published_version": publish.get("version"),
        "previous_version": publish.get("previous_version"),
        "table": publish.get("table"),
        "share": enforce.get("share"),
        "disclosure": publish.get("disclosure"),
        "quarantine_path": validate.get("moved_to") or enforce.get("quarantine_path"),
        "quarantine_rows_withheld_for_erasure": enforce.get("quarantine_rows_withheld_for_erasure", 0),
        "erasure": enforce.get("erasure", {}),
        "incremental": enforce.get("incremental"),
        "timings": {
            "enforce_seconds": enforce.get("seconds"),
            "validate_seconds": validate.get("seconds"),
            "publish_seconds": publish.get("seconds"),
        },
        "reported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "consentgate_version": __version__,
    }
    if "error" in publish:
        report["publish_error"] = publish["error"]
    if publish.get("cleanup_error"):
        report["cleanup_error"] = publish["cleanup_error"]
    if publish.get("superseded_by"):
        # A backfilled or cleared old run: judged and validated, kept as a report only.
        report["superseded_by"] = publish["superseded_by"]
    return report


def _run_order(report: dict) -> tuple[str, str]:
    # A failed run has no judgement instant; it sorts by when it was reported.
    return (report.get("judged_at") or "", report.get("reported_at") or "")


def dataset_reports(lake: Lake, dataset: str) -> list[dict]:
    """Every run report of the dataset, oldest judgement first."""
    folder = lake.path("reports", dataset)
    reports = [_readable_report(f"{folder}/{name}") for name in list_names(folder) if name.endswith(".json")]
    return sorted((r for r in reports if r and "run_id" in r), key=_run_order)


def _readable_report(path: str) -> dict | None:
    # One damaged old report must not stop this run's report or the index.
    try:
        report = read_json(path)
    except (ValueError, OSError):
        return None
    return report if isinstance(report, dict) else None


def write_index(lake: Lake) -> str:
    """``reports/index.html``: every dataset's latest run, linked to its page."""
    latest = []
    for dataset in list_names(lake.path("reports")):
        reports = dataset_reports(lake, dataset)
        if reports:
            latest.append(max(reports, key=lambda r: r.get("reported_at") or ""))
    path = lake.path("reports", "index.html")
    write_text(path, render_index(latest))
    return path


def write_report(lake: Lake, dataset: str, run_id: str) -> tuple[str, dict]:
    """Writes ``<run_id>.json`` and its readable twin ``<run_id>.html``, and refreshes the
    index page; returns the JSON path."""
    report = build_report(lake, dataset, run_id)
    path = lake.report_json(dataset, run_id)
    write_json(path, report)
    recent = [r for r in dataset_reports(lake, dataset) if r["run_id"] != run_id] + [report]
    write_text(path[: -len(".json")] + ".html", render_report(report, sorted(recent, key=_run_order)[-TREND_RUNS:]))
    write_index(lake)
    return path, report
