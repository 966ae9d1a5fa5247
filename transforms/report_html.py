"""Self-contained HTML pages for compliance: one beside each JSON run report, and an
index of every dataset's latest run (``reports/index.html``).

They open from the file with no server and no network: charts are inline SVG, styles
inline, no script. They show only what the JSON reports hold (counts, hashes, paths).
"""

from __future__ import annotations

from html import escape

ACTIONS = ("kept", "anonymized", "dropped", "quarantined")
COLOURS = {"kept": "#2a7", "anonymized": "#37c", "dropped": "#c73", "quarantined": "#c33"}
COVERAGE_STATES = ("consented", "withdrawn", "expired", "refused", "no_event")
COVERAGE_COLOURS = {
    "consented": "#2a7",
    "withdrawn": "#c73",
    "expired": "#db3",
    "refused": "#c33",
    "no_event": "#bbb",
}
STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:75em;color:#222}"
    "table{border-collapse:collapse;margin-bottom:1.5em}"
    "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}td.n{text-align:right}"
    ".good{color:#2a7}.bad{color:#c33;font-weight:bold}.legend span{margin-right:1em}"
    ".swatch{display:inline-block;width:.8em;height:.8em;margin-right:.3em}"
    "svg text{font-family:sans-serif;font-size:12px}"
)


def incremental_summary(described: dict) -> str:
    """One line of a run's ``Plan.describe()``."""
    if described["mode"] != "incremental":
        return f"full run: {described['reason']}"
    line = (
        f"incremental: {described['periods_rejudged']} periods judged again, "
        f"{described['periods_reused']} taken from {described['previous_version']}"
    )
    if described.get("source_files") is not None:
        line += f"; {described['source_files_read']} of {described['source_files']} source files read"
    return line


def _row(*cells: object, header: bool = False) -> str:
    tag = "th" if header else "td"
    return "<tr>" + "".join(f"<{tag}>{escape(str(c))}</{tag}>" for c in cells) + "</tr>"


def _page(title: str, body: list[str]) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n"
    )


def _legend(colours: dict[str, str]) -> str:
    items = "".join(
        f"<span><i class='swatch' style='background:{colour}'></i>{escape(name)}</span>"
        for name, colour in colours.items()
    )
    return f"<p class='legend'>{items}</p>"


def reason_chart(counts: dict[str, dict[str, int]]) -> str:
    """Horizontal bars, one per reason and action that has rows, coloured by action."""
    bars = [(reason, action, n) for reason, by_action in counts.items() for action, n in by_action.items() if n]
    if not bars:
        return "<p>No input rows.</p>"
    widest, label_width, height = max(n for _, _, n in bars), 260, 22
    parts = [
        f"<svg id='reason-chart' role='img' aria-label='rows by reason and action' width='760' "
        f"height='{height * len(bars) + 10}' xmlns='http://www.w3.org/2000/svg'>"
    ]
    for i, (reason, action, n) in enumerate(bars):
        y, width = 5 + i * height, max(1, round(400 * n / widest))
        parts.append(
            f"<text x='{label_width - 6}' y='{y + 15}' text-anchor='end'>{escape(reason)} → {escape(action)}</text>"
            f"<rect class='bar {escape(action)}' x='{label_width}' y='{y + 3}' width='{width}' height='{height - 6}' "
            f"fill='{COLOURS.get(action, '#888')}'><title>{n}</title></rect>"
            f"<text x='{label_width + width + 6}' y='{y + 15}'>{n}</text>"
        )
    parts.append("</svg>")
    return "".join(parts) + _legend(COLOURS)


def trend_chart(history: list[dict]) -> str:
    """Stacked columns of rows by action, for the dataset's recent runs (oldest first)."""
    # A run that stopped before judging has no totals: an empty column, marked ✗.
    runs = [{**r, "totals": r.get("totals") or {}} for r in history]
    if not runs:
        return "<p>No earlier runs.</p>"
    tallest = max(sum(r["totals"].values()) for r in runs) or 1
    column, gap, plot_height = 46, 14, 160
    parts = [
        f"<svg id='trend-chart' role='img' aria-label='rows by action over recent runs' "
        f"width='{max(300, len(runs) * (column + gap) + 20)}' height='{plot_height + 40}' "
        "xmlns='http://www.w3.org/2000/svg'>"
    ]
    for i, run in enumerate(runs):
        x, top = 10 + i * (column + gap), plot_height + 5
        for action in ACTIONS:
            n = run["totals"].get(action, 0)
            height = round(plot_height * n / tallest)
            if height:
                top -= height
                parts.append(
                    f"<rect x='{x}' y='{top}' width='{column}' height='{height}' fill='{COLOURS[action]}'>"
                    f"<title>{escape(run['run_id'])}: {n} {action}</title></rect>"
                )
        label = escape(str(run.get("run_date") or run["run_id"])[-5:])
        marker = "" if run.get("published") else " ✗"
        parts.append(f"<text x='{x + column / 2}' y='{plot_height + 22}' text-anchor='middle'>{label}{marker}</text>")
    parts.append("</svg>")
    parts.append(_legend(COLOURS))
    parts.append("<table id='trend'>" + _row("run", "run date", "rows in", *ACTIONS, "published", header=True))
    for run in reversed(runs):
        totals = [run["totals"].get(action, 0) for action in ACTIONS]
        parts.append(_row(run["run_id"], run.get("run_date"), run["rows_in"], *totals, run.get("published")))
    return "".join(parts) + "</table>"


def coverage_section(coverage: dict | None, own_purpose: str | None) -> str:
    if not coverage:
        return "<p>Not recorded for this run.</p>"
    subjects = coverage["subjects"]
    parts = [
        f"<p>Of the {subjects} customers in this run's input, by their consent at t for each purpose in the "
        "consent log (GPC signals across purposes and TC strings are applied to this run's own purpose only, "
        "in the counts above).</p>",
        "<table id='coverage'>",
        _row("purpose", *COVERAGE_STATES, "consented share", header=True),
    ]
    for purpose, by_state in coverage["purposes"].items():
        total = sum(by_state.values()) or 1
        segments, x = [], 0
        for state in COVERAGE_STATES:
            width = round(200 * by_state.get(state, 0) / total)
            if width:
                segments.append(f"<rect x='{x}' y='0' width='{width}' height='12' fill='{COVERAGE_COLOURS[state]}'/>")
                x += width
        # The unlisted row adds up (subject, purpose) pairs: a share of subjects means nothing there.
        unlisted = purpose.startswith("(")
        share = f"{100 * by_state.get('consented', 0) / subjects:.1f}%" if subjects and not unlisted else "-"
        name = f"<b>{escape(purpose)}</b> (this dataset)" if purpose == own_purpose else escape(purpose)
        cells = "".join(f"<td class='n'>{by_state.get(state, 0)}</td>" for state in COVERAGE_STATES)
        parts.append(
            f"<tr><td>{name}</td>{cells}<td><svg width='200' height='12' xmlns='http://www.w3.org/2000/svg'>"
            f"{''.join(segments)}</svg> {share}</td></tr>"
        )
    parts.append("</table>")
    return "".join(parts) + _legend(COVERAGE_COLOURS)


def _validation(report: dict) -> list[str]:
    validation = report["validation"]
    outcome = "passed" if validation["success"] else "FAILED"
    parts = [
        f"<p class='{'good' if validation['success'] else 'bad'}'>{validation['evaluated']} expectations, {outcome}"
        + (f": {escape(', '.join(validation['failed']))}" if validation["failed"] else "")
        + "</p>"
    ]
    docs = validation.get("data_docs")
    if docs:
        # Reports and Data Docs sit side by side under reports/<dataset>/.
        relative = docs.rsplit("/", 2)[-2] + "/index.html"
        parts.append(f"<p><a href='{escape(relative)}'>Great Expectations Data Docs</a></p>")
    parts.append("<table>")
    parts.append(_row("slice", "expectation", "column", "result", "unexpected", header=True))
    for result in validation["expectations"]:
        parts.append(
            _row(
                result["slice"],
                result["expectation"],
                result["kwargs"].get("column", ""),
                "passed" if result["success"] else "FAILED",
                result.get("unexpected_count", ""),
            )
        )
    parts.append("</table>")
    return parts


def _why_not_published(report: dict) -> str:
    validation = report.get("validation") or {}
    if report.get("superseded_by"):
        return f"judged before the current version {report['superseded_by']}, which stays"
    if validation.get("failed"):
        return "validation failed: " + ", ".join(validation["failed"])
    return report.get("publish_error") or validation.get("error") or "the run stopped before publishing"


def render_report(report: dict, history: list[dict] | None = None) -> str:
    """The run's page; ``history`` holds the dataset's recent reports, this one included."""
    title = f"consentgate run {report['run_id']} of {report['dataset']}"
    parts = [f"<h1>{escape(title)}</h1>"]
    if report.get("rows_in") is None:  # stopped before judging
        parts.append(f"<p class='bad'>Not published: {escape(report.get('error', 'unknown error'))}</p>")
        return _page(title, parts)
    share = report.get("share")
    if report["published"]:
        destination = f"the export to {share['recipient']}" if share else str(report.get("table"))
        outcome = f"published: {report['rows_out']} of {report['rows_in']} input rows in {escape(destination)}"
    else:
        outcome = f"NOT published ({report['rows_out']} of {report['rows_in']} input rows were staged): " + escape(
            _why_not_published(report)
        )
    parts.append(f"<p id='outcome' class='{'good' if report['published'] else 'bad'}'>{outcome}</p>")
    if report.get("cleanup_error"):
        parts.append(f"<p id='cleanup' class='bad'>{escape(report['cleanup_error'])} (the next publish retries)</p>")
    if share and report["published"]:
        parts.append(
            f"<p id='disclosure'>Shared with {escape(share['recipient'])} for {escape(share['purpose'])}: "
            f"{share['subjects']} customers, pseudonymised with the recipient's key "
            f"{escape(share['recipient_key_fingerprint'])}"
            + ("; recorded in <code>reports/disclosures.jsonl</code>" if report.get("disclosure") else "")
            + "</p>"
        )
    parts.append("<table id='totals'>" + _row("action", "rows", "share", header=True))
    for action in ACTIONS:
        n = report["totals"].get(action, 0)
        portion = f"{100 * n / report['rows_in']:.1f}%" if report["rows_in"] else "-"
        parts.append(f"<tr><td>{action}</td><td class='n'>{n}</td><td class='n'>{portion}</td></tr>")
    parts.append("</table>")
    parts.append("<h2>Rows by reason and action</h2>" + reason_chart(report["counts"]))
    parts.append("<table id='counts'>" + _row("reason", "action", "rows", header=True))
    for reason, by_action in report["counts"].items():
        for action, n in by_action.items():
            parts.append(f"<tr><td>{escape(reason)}</td><td>{escape(action)}</td><td class='n'>{n}</td></tr>")
    parts.append("</table>")
    parts.append("<h2>Recent runs of this dataset</h2>" + trend_chart(history or [report]))
    parts.append("<h2>Consent coverage</h2>")
    parts.append(coverage_section(report.get("consent_coverage"), _own_purpose(report)))
    parts.append("<h2>Validation</h2>")
    parts += _validation(report)
    parts.append("<h2>Run</h2><table id='run'>")
    keys = report.get("keys") or {}
    for name in ("run_date", "judged_at", "policy_path", "policy_sha256", "key_version", "key_fingerprint"):
        parts.append(_row(name, report.get(name)))
    if keys.get("encryption"):
        parts.append(
            _row("encryption key", f"version {keys['encryption']['version']}, {keys['encryption']['fingerprint']}")
        )
    for name in ("published_path", "previous_version", "quarantine_path"):
        parts.append(_row(name, report.get(name)))
    incremental = report.get("incremental")
    if incremental:
        parts.append(_row("run mode", incremental_summary(incremental)))
    for step, seconds in report["timings"].items():
        parts.append(_row(step, seconds))
    parts.append("</table>")
    return _page(title, parts)


def _own_purpose(report: dict) -> str | None:
    coverage = report.get("consent_coverage") or {}
    return coverage.get("purpose")


def render_index(latest: list[dict]) -> str:
    """One row per dataset: its latest run, linked to that run's page."""
    title = "consentgate: latest run of every dataset"
    parts = [f"<h1>{escape(title)}</h1>", "<table id='datasets'>"]
    parts.append(_row("dataset", "run", "judged at", "published", "rows in", *ACTIONS, "validation", header=True))
    for report in latest:
        link = f"{escape(report['dataset'])}/{escape(report['run_id'])}.html"
        totals = report.get("totals", {})
        validation = report.get("validation") or {}
        ran = validation.get("evaluated") or validation.get("error")  # not when enforce stopped first
        outcome = "passed" if validation.get("success") else ("FAILED" if ran else "-")
        published = "yes" if report.get("published") else "NO"
        cells = "".join(f"<td class='n'>{totals.get(action, '-')}</td>" for action in ACTIONS)
        rows_in = "-" if report.get("rows_in") is None else report["rows_in"]
        parts.append(
            f"<tr><td>{escape(report['dataset'])}</td><td><a href='{link}'>{escape(report['run_id'])}</a></td>"
            f"<td>{escape(str(report.get('judged_at', '-')))}</td>"
            f"<td class='{'good' if report.get('published') else 'bad'}'>{published}</td>"
            f"<td class='n'>{rows_in}</td>{cells}<td>{outcome}</td></tr>"
        )
    parts.append("</table>")
    if not latest:
        parts.append("<p>No run reports yet.</p>")
    return _page(title, parts)
