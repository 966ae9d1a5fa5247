"""A self-contained HTML page beside each JSON run report: readable with no server and
no network. It shows only what the JSON report holds (counts, hashes, paths)."""

from __future__ import annotations

from html import escape


def _row(*cells: object, header: bool = False) -> str:
    tag = "th" if header else "td"
    return "<tr>" + "".join(f"<{tag}>{escape(str(c))}</{tag}>" for c in cells) + "</tr>"


def render_report(report: dict) -> str:
    title = f"consentgate run {report['run_id']} of {report['dataset']}"
    parts = [f"<h1>{escape(title)}</h1>"]
    if "rows_in" not in report:
        parts.append(f"<p class='bad'>Not published: {escape(report.get('error', 'unknown error'))}</p>")
    else:
        published = "published" if report["published"] else "NOT published"
        parts.append(
            f"<p class='{'good' if report['published'] else 'bad'}'>{escape(published)}: "
            f"{report['rows_out']} of {report['rows_in']} input rows in {escape(str(report.get('table')))}</p>"
        )
        parts.append("<h2>Rows by reason and action</h2><table>")
        parts.append(_row("reason", "action", "rows", "share", header=True))
        for reason, by_action in report["counts"].items():
            for action, n in by_action.items():
                share = f"{100 * n / report['rows_in']:.1f}%" if report["rows_in"] else "-"
                width = int(300 * n / report["rows_in"]) if report["rows_in"] else 0
                parts.append(
                    f"<tr><td>{escape(reason)}</td><td>{escape(action)}</td><td class='n'>{n}</td>"
                    f"<td><span class='bar {escape(action)}' style='width:{width}px'></span> {share}</td></tr>"
                )
        parts.append("</table><h2>Validation</h2>")
        docs = report["validation"].get("data_docs")
        if docs:
            # Reports and Data Docs sit side by side under reports/<dataset>/.
            relative = docs.rsplit("/", 2)[-2] + "/index.html"
            parts.append(f"<p><a href='{escape(relative)}'>Great Expectations Data Docs</a></p>")
        parts.append("<table>")
        parts.append(_row("slice", "expectation", "column", "result", "unexpected", header=True))
        for result in report["validation"]["expectations"]:
            parts.append(
                _row(
                    result["slice"],
                    result["expectation"],
                    result["kwargs"].get("column", ""),
                    "passed" if result["success"] else "FAILED",
                    result.get("unexpected_count", ""),
                )
            )
        parts.append("</table><h2>Run</h2><table>")
        for key in (
            "run_date",
            "judged_at",
            "policy_path",
            "policy_sha256",
            "key_fingerprint",
            "key_version",
            "published_path",
            "previous_version",
            "quarantine_path",
        ):
            parts.append(_row(key, report.get(key)))
        for step, seconds in report["timings"].items():
            parts.append(_row(step, seconds))
        parts.append("</table>")
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin-bottom:1.5em}"
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}td.n{text-align:right}"
        ".bar{display:inline-block;height:.8em;background:#888}.bar.kept{background:#2a7}"
        ".bar.anonymized{background:#37c}.bar.dropped{background:#c73}.bar.quarantined{background:#c33}"
        ".good{color:#2a7}.bad{color:#c33;font-weight:bold}"
    )
    body = "\n".join(parts)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{style}</style></head><body>{body}</body></html>\n"
    )
