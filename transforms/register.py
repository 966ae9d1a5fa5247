"""``consentgate register``: a record of processing activities (GDPR Art. 30 style),
generated from every policy, as Markdown and as a self-contained HTML page.

Per dataset: the purpose and its legal basis, the categories of personal data and how
each column is treated in consented and anonymised rows, retention, recipients and the
keys. It is generated from the policies alone, so the copy kept in the repository can be
checked for staleness (``--check``, run by CI); with ``--lake`` it also names the key
version and fingerprint each dataset's current published version was made with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from transforms.categories import CATEGORIES, NOT_PERSONAL
from transforms.errors import PolicyError
from transforms.policy import OnNoConsent, OnRetentionExpired, Policy, find_policies, load_policy

TITLE = "Record of processing activities"
GENERATED_BY = "consentgate register"


@dataclass
class Section:
    heading: str
    facts: list[tuple[str, str]]
    columns: list[tuple[str, str, str, str, str]] = field(default_factory=list)


def _retention(policy: Policy) -> str:
    versions = f"the last {policy.keep_versions} published versions are kept"
    if policy.is_share:
        versions = (
            "only the current export is kept here (the disclosure log records each earlier one; "
            "the recipient keeps what it was handed)"
        )
    quarantine = (
        f"quarantined rows, failed outputs and unpublished staged outputs are removed "
        f"{policy.quarantine_retention_days} days after they were written, by the dataset's next run"
    )
    if policy.retention_days is None:
        return f"no limit declared for the rows; {versions}; {quarantine}"
    after = "dropped" if policy.on_retention_expired is OnRetentionExpired.DROP else "anonymised"
    return (
        f"{policy.retention_days} days from the event, then {after} from what is published (the source in `raw/` "
        f"is kept by the system that writes it); {versions}; {quarantine}"
    )


def _without_consent(policy: Policy) -> str:
    if policy.on_no_consent is OnNoConsent.DROP:
        return "rows of customers without valid consent are not published"
    return "rows of customers without valid consent are published anonymised (the anonymised rows' rules below)"


def _keys(policy: Policy, lake_root: str | None) -> str:
    kinds = ["HMAC key `CONSENTGATE_HMAC_KEY` (pseudonyms, erasure tombstones)"]
    if any(rule.name == "date_shift" for rule in policy.rules):
        kinds[0] = "HMAC key `CONSENTGATE_HMAC_KEY` (pseudonyms, date shifts, erasure tombstones)"
    if policy.needs_encryption_key:
        kinds.append("encryption key `CONSENTGATE_ENCRYPTION_KEY` (AES-256-GCM)")
    text = "; ".join(kinds)
    if lake_root is not None:
        text += "; " + _current_keys(policy, lake_root)
    return text


def _current_keys(policy: Policy, lake_root: str) -> str:
    from transforms.key_continuity import recorded_keys
    from transforms.lake import Lake
    from transforms.publish import current_version

    lake = Lake.at(lake_root)
    version = current_version(lake, policy.dataset)
    if version is None:
        return "nothing published yet"
    keys = recorded_keys(lake, policy.dataset, lake.clean_version(policy.dataset, version), version) or {}
    described = [
        f"{kind} version {entry.get('version')} (fingerprint {entry.get('fingerprint')})"
        for kind, entry in sorted(keys.items())
        if entry
    ]
    return f"current version `{version}` made with " + (", ".join(described) or "unrecorded keys")


def _categories(policy: Policy) -> str:
    by_category: dict[str, list[str]] = {}
    for column in policy.columns:
        if column.category not in (None, NOT_PERSONAL):
            by_category.setdefault(column.category, []).append(column.name)
    undeclared = [c.name for c in policy.columns if c.category is None]
    # In the policy's own order, so that the register reads like the policy.
    parts = [f"{CATEGORIES[kind]}: {', '.join(names)}" for kind, names in by_category.items()]
    if undeclared:
        parts.append(f"not declared: {', '.join(undeclared)}")
    return "; ".join(parts) or "none declared"


def _third_parties(recipients: list[str]) -> str:
    if not recipients:
        return "none"
    return ", ".join(f"{r} (only customers who consented to `share:{r}`; see its section)" for r in recipients)


def share_section_for(policy: Policy, policy_label: str, lake_root: str | None) -> Section:
    gpc = "yes: a Global Privacy Control refusal counts" if policy.sale_or_sharing else "no"
    facts = [
        ("Description", policy.description or "(none given)"),
        ("Recipient", f"{policy.recipient} (third party)"),
        ("Purpose", f"`{policy.purpose}`"),
        ("Legal basis", "consent of the customer to sharing with this recipient (GDPR Art. 6(1)(a)), at each export"),
        ("Sale or sharing", gpc),
        ("Data subjects", f"customers of `{policy.shared_dataset}`, identified by `{policy.subject_key}`"),
        ("Source", f"`{policy.source}` (event time `{policy.event_time}`)"),
        ("Categories of personal data", _categories(policy)),
        (
            "Disclosed as",
            f"`exports/{policy.recipient}/{policy.shared_dataset}/` by the DAG `{policy.dag_id}`; every export is "
            "recorded in `reports/disclosures.jsonl` (recipient, purpose, rows, customers, time, policy hash)",
        ),
        ("Without consent", "rows of customers without valid consent to this purpose are not exported"),
        ("Retention", _retention(policy)),
        ("Erasure", "requests remove the customer from the current export; earlier exports stay logged"),
        (
            "Keys",
            f"pseudonyms and date shifts use {policy.recipient}'s own key, derived from `CONSENTGATE_HMAC_KEY`: "
            "no two recipients share a pseudonym",
        ),
    ]
    if lake_root is not None:
        facts.append(("Current export", _current_keys(policy, lake_root)))
    facts.append(("Policy", f"`{policy_label}` (sha256 `{policy.sha256}`)"))
    columns = [
        (c.name, c.category or "not declared", c.consented.description, "not exported", c.note) for c in policy.columns
    ]
    return Section(heading=f"{policy.shared_dataset} shared with {policy.recipient}", facts=facts, columns=columns)


def section_for(policy: Policy, policy_label: str, lake_root: str | None, recipients: list[str] = ()) -> Section:
    if policy.is_share:
        return share_section_for(policy, policy_label, lake_root)
    gpc = "yes: a Global Privacy Control refusal counts" if policy.sale_or_sharing else "no"
    facts = [
        ("Description", policy.description or "(none given)"),
        ("Purpose", f"`{policy.purpose}`"),
        (
            "Legal basis",
            "consent of the customer for this purpose (GDPR Art. 6(1)(a)), judged for every row at each run"
            + (
                "; rows without it are published only anonymised, and whether they are anonymous enough to fall "
                "outside the GDPR is the controller's assessment (see the anonymised rows' rules below)"
                if policy.on_no_consent is OnNoConsent.ANONYMIZE
                else ""
            ),
        ),
        ("Sale or sharing", gpc),
        ("Data subjects", f"customers, identified by `{policy.subject_key}`"),
        ("Source", f"`{policy.source}` (event time `{policy.event_time}`)"),
        ("Categories of personal data", _categories(policy)),
        ("Published as", f"`clean.{policy.dataset}` by the DAG `privacy_{policy.dataset}`"),
        (
            "Recipients",
            f"internal analysts reading `clean.{policy.dataset}`; third parties: {_third_parties(list(recipients))}",
        ),
        ("Without consent", _without_consent(policy)),
        ("Retention", _retention(policy)),
        (
            "Erasure",
            "requests remove the customer's rows from every retained published version, the quarantine and staged "
            "outputs (a version that cannot be searched for the customer is removed), at each run of this dataset; "
            "anonymised rows, which carry no link to the customer, stay; the source in `raw/` and the request log are "
            "deleted by the systems that write them, not here",
        ),
        ("Keys", _keys(policy, lake_root)),
    ]
    if policy.quasi_identifiers:
        names = ", ".join(f"`{q}`" for q in policy.quasi_identifiers)
        facts.append(("k-anonymity", f"anonymised rows share {names} with at least {policy.k_min} customers"))
    facts.append(("Policy", f"`{policy_label}` (sha256 `{policy.sha256}`)"))
    columns = [
        (c.name, c.category or "not declared", c.consented.description, c.anonymized.description, c.note)
        for c in policy.columns
    ]
    # Columns the output has beyond the declared ones.
    columns.append(("record_state", "none", "consented", "anonymized", "which of the two each row is"))
    if policy.partition_column is not None:
        period = f"the {policy.partition_by} of `{policy.event_time}`"
        columns.append((policy.partition_column, "behaviour", period, period, "the table's partition folders"))
    return Section(heading=policy.dataset, facts=facts, columns=columns)


CONTROLLER_FILE_NAME = "controller.yml"
NOT_STATED = f"not stated (write {CONTROLLER_FILE_NAME} beside the policies' folder, or give --controller)"
# The default: the controller file beside the policies' folder, if there is one.
BESIDE_THE_POLICIES = "beside the policies"


def controller_file_for(policy_folder: str, controller_file: str | None) -> tuple[str, bool]:
    """``(path, given)``: the controller file named, or the one beside the policies' folder
    (``dags/controller.yml`` for ``dags/policies``)."""
    if controller_file not in (None, BESIDE_THE_POLICIES):
        return controller_file, True
    return (Path(policy_folder).parent / CONTROLLER_FILE_NAME).as_posix(), False


def controller_section(controller_file: str, given: bool, policies: list[Policy]) -> Section:
    """Who is responsible, and the security measures (Art. 30(1)(a), (e), (g)): those
    consentgate applies to every dataset, then the controller's own. A file named on the
    command line must exist; the default one may not."""
    from transforms.controller import load_controller

    stated = load_controller(controller_file) if given or Path(controller_file).is_file() else None
    measures = [
        "identifiers pseudonymised with a keyed HMAC-SHA256; keys kept outside the lake, never logged nor reported",
        "only outputs that passed validation are published (a Great Expectations suite and an independent "
        "consent cross-check); every row of every run is counted under one reason",
        "rows that could not be judged, unvalidated outputs and erasure tombstones are owner-only on a local lake; "
        "quarantined rows and unpublished outputs are removed after each policy's quarantine retention",
        "every disclosure to a third party, decryption and rollback is logged under `reports/`, counting customers, "
        "never naming them",
    ]
    if any(policy.needs_encryption_key for policy in policies):
        measures.insert(1, "columns declared `encrypt` are encrypted with AES-256-GCM")
    measures += list(stated.security_measures) if stated else []
    facts = [
        ("Controller", stated.controller.describe() if stated else NOT_STATED),
        ("Data protection officer", stated.dpo.describe() if stated and stated.dpo else NOT_STATED),
        ("Representative", stated.representative.describe() if stated and stated.representative else "none stated"),
        ("Transfers to third countries", stated.transfers if stated and stated.transfers else NOT_STATED),
        ("Security measures", "; ".join(measures)),
    ]
    if stated:
        facts.append(("Stated in", f"`{Path(controller_file).as_posix()}`"))
    return Section(heading="Controller and security measures", facts=facts)


def build_sections(
    policy_folder: str, lake_root: str | None = None, controller_file: str | None = BESIDE_THE_POLICIES
) -> list[Section]:
    paths = find_policies(policy_folder)
    if not paths:
        raise PolicyError(f"{policy_folder}: no policy files (*.yml, *.yaml) to register")
    policies = [(path, load_policy(path)) for path in paths]
    recipients: dict[str, list[str]] = {}
    for _, policy in policies:
        if policy.is_share:
            recipients.setdefault(policy.shared_dataset, []).append(policy.recipient)
    folder = Path(policy_folder).as_posix().rstrip("/")
    return [controller_section(*controller_file_for(policy_folder, controller_file), [p for _, p in policies])] + [
        section_for(policy, f"{folder}/{path.name}", lake_root, recipients.get(policy.dataset, []))
        for path, policy in policies
    ]


def _policy_count(sections: list[Section]) -> int:
    return sum(1 for section in sections if section.columns)  # (the controller's has none)


# Facts whose whole text comes from a policy or the controller file, not from consentgate.
_WRITTEN_BY_HAND = (
    "Description",
    "Controller",
    "Data protection officer",
    "Representative",
    "Transfers to third countries",
)


def _md_literal(text: str) -> str:
    """Text written in a policy (a description, a note) as it reads: Markdown's own
    markup (emphasis, links, images, code) shown as written, not rendered."""
    return "".join(f"\\{ch}" if ch in "\\`*_[]!#~" else ch for ch in text)


def _md_cell(text: str) -> str:
    # Markdown renders inline HTML: a policy's note is text, never markup.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|").replace("\n", " ")


def render_markdown(sections: list[Section], policy_folder: str) -> str:
    lines = [
        f"# {TITLE}",
        "",
        f"Generated by `{GENERATED_BY}` from the {_policy_count(sections)} policies in `{policy_folder}`. "
        "Do not edit: change a policy and run the command again (the tests fail when this file is stale).",
    ]
    for section in sections:
        lines += ["", f"## {section.heading}", "", "| | |", "| --- | --- |"]
        lines += [
            f"| {name} | {_md_cell(_md_literal(value) if name in _WRITTEN_BY_HAND else value)} |"
            for name, value in section.facts
        ]
        if not section.columns:
            continue
        lines += [
            "",
            "| column | category | consented rows | anonymised rows | note |",
            "| --- | --- | --- | --- | --- |",
        ]
        for *cells, note in section.columns:
            lines.append("| " + " | ".join(_md_cell(cell) for cell in [*cells, _md_literal(note)]) + " |")
    return "\n".join(lines) + "\n"


def _inline_code(text: str) -> str:
    """Markdown's `code` spans as <code> in already escaped HTML."""
    parts = escape(text).split("`")
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))


def _anchor(heading: str) -> str:
    return escape(heading.replace(" ", "-"))


def render_html(sections: list[Section], policy_folder: str) -> str:
    body = [
        f"<h1>{escape(TITLE)}</h1>",
        f"<p>Generated by <code>{GENERATED_BY}</code> from the {_policy_count(sections)} policies in "
        f"<code>{escape(policy_folder)}</code>.</p>",
        "<ul>"
        + "".join(f"<li><a href='#{_anchor(s.heading)}'>{escape(s.heading)}</a></li>" for s in sections)
        + "</ul>",
    ]
    for section in sections:
        body.append(f"<h2 id='{_anchor(section.heading)}'>{escape(section.heading)}</h2><table class='facts'>")
        body += [f"<tr><th>{escape(name)}</th><td>{_inline_code(value)}</td></tr>" for name, value in section.facts]
        if not section.columns:
            body.append("</table>")
            continue
        body.append("</table><table><tr><th>column</th><th>category</th><th>consented rows</th>")
        body.append("<th>anonymised rows</th><th>note</th></tr>")
        for row in section.columns:
            body.append("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>")
        body.append("</table>")
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:75em}table{border-collapse:collapse;margin-bottom:1.5em}"
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}"
        "table.facts th{width:14em;background:#f4f4f4}code{background:#f4f4f4;padding:0 .2em}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(TITLE)}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


def render(
    policy_folder: str, lake_root: str | None = None, controller_file: str | None = BESIDE_THE_POLICIES
) -> dict[str, str]:
    """``{file name: content}`` of the register."""
    sections = build_sections(policy_folder, lake_root, controller_file)
    return {
        "register.md": render_markdown(sections, policy_folder),
        "register.html": render_html(sections, policy_folder),
    }


def stale_files(policy_folder: str, out_folder: str, controller_file: str | None = BESIDE_THE_POLICIES) -> list[str]:
    """The register files under ``out_folder`` that differ from what the policies give now."""
    stale = []
    for name, content in render(policy_folder, None, controller_file).items():
        path = Path(out_folder) / name
        if not path.is_file() or path.read_text(encoding="utf-8") != content:
            stale.append(str(path))
    return stale


def write_register(
    policy_folder: str,
    out_folder: str,
    lake_root: str | None = None,
    controller_file: str | None = BESIDE_THE_POLICIES,
) -> list[str]:
    files = render(policy_folder, lake_root, controller_file)  # before anything is written: a bad file stops it
    Path(out_folder).mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in files.items():
        path = Path(out_folder) / name
        path.write_text(content, encoding="utf-8")
        written.append(str(path))
    return written
