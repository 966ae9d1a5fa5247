"""The policy file: parsed into typed objects and checked when it is loaded.

Everything a policy leaves undeclared takes the safe default: a column not listed is
dropped, a state without a rule drops the column, unknown keys are an error.
Importing this module must stay cheap (no pyspark): Airflow parses DAGs with it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import yaml

from transforms.categories import CATEGORIES
from transforms.errors import PolicyError
from transforms.lake import export_name
from transforms.rules import ColumnRule, RuleSyntaxError, parse_rule


class CheckConsentAt(StrEnum):
    RUN = "run"
    EVENT_AND_RUN = "event_and_run"


class OnNoConsent(StrEnum):
    ANONYMIZE = "anonymize"
    DROP = "drop"


class OnRetentionExpired(StrEnum):
    DROP = "drop"
    ANONYMIZE = "anonymize"


class SubjectKeyNormalization(StrEnum):
    LOWER = "lower"


class PolicyKind(StrEnum):
    # A dataset judged and published for internal analysts as clean.<dataset>.
    PROCESSING = "processing"
    # A dataset's consented rows exported to one third party (see transforms/share.py).
    SHARE = "share"


RECORD_STATES = ("consented", "anonymized")
# The output column that tells an analyst which rules a row went through.
STATE_COLUMN = "record_state"
_DATASET_NAME = re.compile(r"[a-z][a-z0-9_]*")
_PURPOSE = re.compile(r"[a-z][a-z0-9_]*(:[a-z0-9][a-z0-9_.-]*)?")

# Besides its rules, a column may say what it holds and why it is kept (or one ``rule``
# for both states).
_COLUMN_METADATA = ("rule", "category", "note")
_REQUIRED_KEYS = ("dataset", "source", "subject_key", "event_time", "purpose", "columns")
_OPTIONAL_KEYS = (
    "kind",
    "recipient",
    "description",
    "retention_days",
    "check_consent_at",
    "on_no_consent",
    "on_retention_expired",
    "subject_key_normalize",
    "sale_or_sharing",
    "tcf",
    "quasi_identifiers",
    "k_min",
    "keep_versions",
    "quarantine_retention_days",
    "partition_by",
)
DEFAULT_K_MIN = 5
DEFAULT_KEEP_VERSIONS = 5
DEFAULT_QUARANTINE_RETENTION_DAYS = 30
# A hundred years: longer means no limit, which is said by leaving the key out (and a
# day count past the calendar's end would stop the run when it computes its cut-off).
MAX_DAYS = 36500
_RECIPIENT = re.compile(r"[a-z][a-z0-9_]*")
# What a recipient must not receive as it is: two recipients could join their copies on it.
DIRECT_IDENTIFIER_CATEGORIES = ("identifier", "contact", "name", "online")
MAX_SHARED_MASK_CHARACTERS = 4


@dataclass(frozen=True)
class ColumnPolicy:
    """How one declared column is treated in consented rows and in anonymised rows."""

    name: str
    consented: ColumnRule
    anonymized: ColumnRule
    # What kind of personal data the column holds (transforms/categories.py), and why a
    # personal column is kept as it is: documentation for the register and the linter.
    category: str | None = None
    note: str = ""

    def rule_for(self, state: str) -> ColumnRule:
        return self.consented if state == "consented" else self.anonymized

    @property
    def dropped_everywhere(self) -> bool:
        return self.consented.removes_value and self.anonymized.removes_value


@dataclass(frozen=True)
class TcfMapping:
    """A column of IAB TCF v2 consent strings, and the TCF purposes this policy's purpose needs."""

    column: str
    purposes: tuple[int, ...]


@dataclass(frozen=True)
class Policy:
    path: str
    sha256: str
    dataset: str
    source: str
    subject_key: str
    event_time: str
    purpose: str
    retention_days: int | None
    check_consent_at: CheckConsentAt
    on_no_consent: OnNoConsent
    on_retention_expired: OnRetentionExpired
    subject_key_normalize: tuple[SubjectKeyNormalization, ...]
    columns: tuple[ColumnPolicy, ...]
    description: str = ""
    sale_or_sharing: bool = False
    tcf: TcfMapping | None = None
    quasi_identifiers: tuple[str, ...] = ()
    k_min: int = DEFAULT_K_MIN
    keep_versions: int = DEFAULT_KEEP_VERSIONS
    quarantine_retention_days: int = DEFAULT_QUARANTINE_RETENTION_DAYS
    kind: PolicyKind = PolicyKind.PROCESSING
    recipient: str | None = None
    # The dataset the rows come from: ``dataset`` itself, or for a share the dataset shared
    # (``dataset`` is then the export's name, ``<dataset>-to-<recipient>``).
    shared_dataset: str = ""
    # The period of the event time (year | month | day) the published table is partitioned
    # by, in the column ``partition_column``; None: one folder, every run a full one.
    partition_by: str | None = None

    @property
    def partition_column(self) -> str | None:
        return None if self.partition_by is None else f"{self.event_time}_{self.partition_by}"

    @property
    def normalization(self) -> str:
        """How subject keys are normalised beyond trimming and NFC, as one label (empty,
        or ``lower``): what erasure tombstones record, and what lint compares."""
        return ",".join(step.value for step in self.subject_key_normalize)

    @property
    def is_share(self) -> bool:
        return self.kind is PolicyKind.SHARE

    @property
    def dag_id(self) -> str:
        if self.is_share:
            return f"share_{self.shared_dataset}_to_{self.recipient}"
        return f"privacy_{self.dataset}"

    @property
    def named_source_columns(self) -> tuple[str, ...]:
        """Every source column the policy names: the subject key, the event time, the TC
        string column and each declared column (even one it drops everywhere)."""
        tcf = (self.tcf.column,) if self.tcf is not None else ()
        return tuple(dict.fromkeys((self.subject_key, self.event_time, *tcf, *(c.name for c in self.columns))))

    @property
    def output_columns(self) -> tuple[ColumnPolicy, ...]:
        """Declared columns that appear in the output (those not dropped for every row)."""
        return tuple(c for c in self.columns if not c.dropped_everywhere)

    def column(self, name: str) -> ColumnPolicy | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def rules(self) -> tuple[ColumnRule, ...]:
        return tuple(rule for c in self.columns for rule in (c.consented, c.anonymized))

    @property
    def needs_encryption_key(self) -> bool:
        return any(rule.spec.needs_encryption_key for rule in self.rules)


def _fail(path: str, where: str, problem: str) -> PolicyError:
    return PolicyError(f"{path}: {where}: {problem}")


def _enum(path: str, raw: dict, key: str, enum: type[StrEnum], default: StrEnum) -> StrEnum:
    value = raw.get(key, default.value)
    try:
        return enum(value)
    except ValueError:
        allowed = " | ".join(e.value for e in enum)
        raise _fail(path, key, f"{value!r} is not one of {allowed}") from None


def _parse_rule(path: str, where: str, text: object) -> ColumnRule:
    try:
        return parse_rule(text)
    except RuleSyntaxError as err:
        raise _fail(path, where, str(err)) from None


def _parse_column(path: str, name: object, spec: object, subject_key: str, share: bool = False) -> ColumnPolicy:
    if not isinstance(name, str) or not name:
        raise _fail(path, "columns", f"column name {name!r} is not a string")
    if not name.isprintable() or name != name.strip() or name.startswith("_cg_"):
        # A line break would split every one-line message naming it; blanks around it
        # and consentgate's own prefix name columns Spark would confuse.
        raise _fail(path, "columns", f"column name {name!r}: no control characters, surrounding blanks or _cg_ prefix")
    where = f"columns.{name}"
    if name == STATE_COLUMN:
        raise _fail(path, where, "the name is reserved for the output's record state")
    if share:
        return _parse_shared_column(path, where, name, spec)
    category, note = None, ""
    if isinstance(spec, dict):
        unknown = set(spec) - set(RECORD_STATES) - set(_COLUMN_METADATA)
        if unknown:
            allowed = ", ".join((*RECORD_STATES, *_COLUMN_METADATA))
            raise _fail(path, where, f"unknown key {sorted(unknown, key=str)[0]!r} (allowed: {allowed})")
        category, note = _parse_column_metadata(path, where, spec)
        rules = set(spec) & {"rule", *RECORD_STATES}
        if "rule" in spec and rules != {"rule"}:
            raise _fail(path, where, "give either rule or consented/anonymized, not both")
        if "rule" in spec:
            consented = anonymized = _parse_rule(path, f"{where}.rule", spec["rule"])
        else:
            # A state the policy does not mention gets the safe rule.
            consented = _parse_rule(path, f"{where}.consented", spec.get("consented", "drop"))
            anonymized = _parse_rule(path, f"{where}.anonymized", spec.get("anonymized", "drop"))
    else:
        consented = anonymized = _parse_rule(path, where, spec)
    if anonymized.links_to_subject:
        raise _fail(
            path,
            f"{where}.anonymized" if isinstance(spec, dict) else where,
            f"{anonymized.text!r} links a row to its subject and may not be used on anonymised rows "
            "(write {consented: ..., anonymized: drop})",
        )
    if name == subject_key and not anonymized.removes_value:
        raise _fail(path, where, "the subject key must be dropped from anonymised rows (anonymized: drop)")
    if name == subject_key and consented.name not in ("keep", "pseudonymize", "drop"):
        # Erasure finds a subject's published rows by this column: it must stay matchable.
        raise _fail(path, where, f"the subject key may only be kept, pseudonymised or dropped, not {consented.text!r}")
    return ColumnPolicy(name=name, consented=consented, anonymized=anonymized, category=category, note=note)


def _parse_shared_column(path: str, where: str, name: str, spec: object) -> ColumnPolicy:
    """A share exports consented rows only: one rule per column, and nothing a recipient
    could join on with another recipient's copy."""
    category, note = None, ""
    if isinstance(spec, dict):
        unknown = set(spec) - set(_COLUMN_METADATA)
        if unknown:
            problem = f"unknown key {sorted(unknown, key=str)[0]!r} (allowed: {', '.join(_COLUMN_METADATA)})"
            if unknown & set(RECORD_STATES):
                problem += "; a share exports consented rows only, so a column has one rule"
            raise _fail(path, where, problem)
        category, note = _parse_column_metadata(path, where, spec)
        text = spec.get("rule", "drop")
        where = f"{where}.rule" if "rule" in spec else where
    else:
        text = spec
    rule = _parse_rule(path, where, text)
    if rule.spec.needs_encryption_key:
        raise _fail(path, where, "a recipient cannot decrypt our ciphertext: encrypt is not allowed in a share")
    if category is None and not rule.removes_value:
        # What goes to a third party must say what it is: the register lists it, and the
        # checks below depend on it.
        raise _fail(path, where, f"a column exported to a third party needs a category ({' | '.join(CATEGORIES)})")
    if category in DIRECT_IDENTIFIER_CATEGORIES and not _hides_identifier(rule):
        raise _fail(
            path,
            where,
            f"a column of category {category} exported as {rule.text!r} would let two recipients join their "
            f"copies: pseudonymize, redact, mask (at most {MAX_SHARED_MASK_CHARACTERS} characters shown) or drop it",
        )
    drop = parse_rule("drop")
    return ColumnPolicy(name=name, consented=rule, anonymized=drop, category=category, note=note)


def _hides_identifier(rule: ColumnRule) -> bool:
    if rule.name == "mask":
        return (rule.argument or 4) <= MAX_SHARED_MASK_CHARACTERS
    return rule.removes_value or rule.name in ("pseudonymize", "redact")


def _parse_column_metadata(path: str, where: str, spec: dict) -> tuple[str | None, str]:
    category = spec.get("category")
    if category is not None and (not isinstance(category, str) or category not in CATEGORIES):
        raise _fail(path, f"{where}.category", f"{category!r} is not one of {' | '.join(CATEGORIES)}")
    note = spec.get("note", "")
    if not isinstance(note, str):
        raise _fail(path, f"{where}.note", "must be a string")
    return category, note.strip()


def _parse_tcf(path: str, raw: object) -> TcfMapping | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) != {"column", "purposes"}:
        raise _fail(path, "tcf", "must be {column: <TC string column>, purposes: [TCF purpose ids]}")
    purposes = raw["purposes"]
    if not isinstance(raw["column"], str) or not raw["column"].strip():
        raise _fail(path, "tcf.column", f"{raw['column']!r} must name the column of TC strings")
    if (
        not isinstance(purposes, list)
        or len(set(map(str, purposes))) != len(purposes)
        or not purposes
        or not all(isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 24 for p in purposes)
    ):
        raise _fail(path, "tcf.purposes", f"{purposes!r} must be a non-empty list of distinct TCF purpose ids 1-24")
    return TcfMapping(column=raw["column"], purposes=tuple(purposes))


def _parse_k_anonymity(path: str, raw: dict, declared: set[str]) -> tuple[tuple[str, ...], int]:
    quasi = raw.get("quasi_identifiers")
    k_min = raw.get("k_min", DEFAULT_K_MIN)
    if quasi is None:
        if "k_min" in raw:
            raise _fail(path, "k_min", "needs quasi_identifiers, the columns whose values k rows must share")
        return (), DEFAULT_K_MIN
    if not isinstance(quasi, list) or not quasi or not all(isinstance(q, str) for q in quasi):
        raise _fail(path, "quasi_identifiers", "must be a non-empty list of declared column names")
    for name in quasi:
        if name not in declared:
            raise _fail(path, "quasi_identifiers", f"{name!r} is not a declared column")
    if len(set(quasi)) != len(quasi):
        raise _fail(path, "quasi_identifiers", "names a column twice")
    if isinstance(k_min, bool) or not isinstance(k_min, int) or k_min < 2:
        raise _fail(path, "k_min", f"{k_min!r} must be a whole number of at least 2")
    return tuple(quasi), k_min


# From the finest to the coarsest; ``keep`` publishes the exact instant.
_PERIOD_RANK = {"keep": 0, "day": 1, "month": 2, "year": 3}


def _parse_partition_by(path: str, raw: dict, columns: tuple[ColumnPolicy, ...], share: bool) -> str | None:
    """The event-time period the published table is partitioned by. Every published row
    carries its partition's value, so it may be no finer than what the event time's rules
    publish in either state: anonymised rows keeping the month allow month or year."""
    period = raw.get("partition_by")
    if period is None:
        return None
    if period not in ("year", "month", "day"):
        raise _fail(path, "partition_by", f"{period!r} is not one of year | month | day")
    if share:
        raise _fail(path, "partition_by", "a share's export is one folder for its recipient: it is not partitioned")
    event_time = next((c for c in columns if c.name == raw["event_time"]), None)
    if event_time is None:
        raise _fail(
            path, "partition_by", f"the event time {raw['event_time']!r} is not published, nor may its {period} be"
        )
    for state in RECORD_STATES:
        rule = event_time.rule_for(state)
        published = "keep" if rule.name == "keep" else rule.argument[0] if rule.name == "generalize" else None
        if published not in _PERIOD_RANK or _PERIOD_RANK[published] > _PERIOD_RANK[period]:
            raise _fail(
                path,
                "partition_by",
                f"{period!r} would publish more of {raw['event_time']!r} than its {state} rule "
                f"{rule.text!r} does (allowed: keep, or generalize to the same period or finer)",
            )
    column = f"{raw['event_time']}_{period}"
    if column in {c.name for c in columns}:
        raise _fail(path, "partition_by", f"the partition column {column!r} is also a declared column")
    return period


# The lake's own folders: what consentgate writes, and the logs every dataset is judged by.
_NOT_A_SOURCE = ("staging", "clean", "quarantine", "exports", "ledger", "reports", "tombstones", "_catalog", "locks")
_NOT_A_SOURCE_IN_RAW = ("consent", "erasure_requests")


def _check_source(path: str, source: str) -> None:
    """The source is a folder of the lake, named from its root, outside its own folders."""
    parts = source.rstrip("/").split("/")
    if source.startswith("/") or "://" in source or any(part in ("", ".", "..") for part in parts):
        raise _fail(path, "source", f"{source!r} must be a folder of the lake named from its root, e.g. raw/orders")
    in_raw = parts[0] == "raw" and (len(parts) == 1 or parts[1] in _NOT_A_SOURCE_IN_RAW)  # raw/ holds the logs
    if parts[0] in _NOT_A_SOURCE or in_raw:
        raise _fail(path, "source", f"{source!r} is one of the lake's own folders, not a dataset's source")


def _text(path: str, raw: dict, key: str) -> str:
    value = raw.get(key, "")
    if not isinstance(value, str):
        raise _fail(path, key, f"{value!r} must be text")
    return value


def _positive_int(path: str, raw: dict, key: str, default: int, most: int | None = None) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (most is not None and value > most):
        bounds = f"from 1 to {most}" if most is not None else "of at least 1"
        raise _fail(path, key, f"{value!r} must be a whole number {bounds}")
    return value


def parse_policy(raw: object, path: str, sha256: str = "") -> Policy:
    if not isinstance(raw, dict):
        raise PolicyError(f"{path}: the policy must be a YAML mapping")
    unknown = set(raw) - set(_REQUIRED_KEYS) - set(_OPTIONAL_KEYS)
    if unknown:
        # (YAML reads `on:` or `yes:` as true: the key is named as YAML read it.)
        raise _fail(path, str(sorted(unknown, key=str)[0]), "unknown key")
    for key in _OPTIONAL_KEYS:
        if key in raw and raw[key] is None:
            # `retention_days:` left empty would otherwise mean no limit at all.
            raise _fail(path, key, "is empty: give it a value, or leave the key out for its default")
    for key in _REQUIRED_KEYS:
        if key not in raw or raw[key] in (None, ""):
            raise _fail(path, key, "missing")
    for key in ("dataset", "source", "subject_key", "event_time", "purpose"):
        if not isinstance(raw[key], str):
            raise _fail(path, key, f"must be a string, got {raw[key]!r}")
    _check_source(path, raw["source"])
    if not _DATASET_NAME.fullmatch(raw["dataset"]):
        raise _fail(path, "dataset", f"{raw['dataset']!r} must match [a-z][a-z0-9_]*")
    if not _PURPOSE.fullmatch(raw["purpose"]):
        raise _fail(path, "purpose", f"{raw['purpose']!r} is not a purpose name")
    kind = _enum(path, raw, "kind", PolicyKind, PolicyKind.PROCESSING)
    recipient = _parse_share(path, raw) if kind is PolicyKind.SHARE else None
    if recipient is None and "recipient" in raw:
        raise _fail(path, "recipient", "only a share (kind: share) has a recipient")
    retention = raw.get("retention_days")
    if retention is not None and (
        isinstance(retention, bool) or not isinstance(retention, int) or not 0 < retention <= MAX_DAYS
    ):
        raise _fail(path, "retention_days", f"{retention!r} must be a whole number of days from 1 to {MAX_DAYS}")
    normalize = raw.get("subject_key_normalize", [])
    if not isinstance(normalize, list) or len(set(map(str, normalize))) != len(normalize):
        raise _fail(path, "subject_key_normalize", "must be a list naming each step once, e.g. [lower]")
    try:
        normalizations = tuple(SubjectKeyNormalization(n) for n in normalize)
    except ValueError:
        raise _fail(path, "subject_key_normalize", f"only {SubjectKeyNormalization.LOWER.value!r} is known") from None

    # Selling or sharing with third parties: a Global Privacy Control signal refuses it.
    sale_or_sharing = raw.get("sale_or_sharing", raw["purpose"].startswith("share:"))
    if not isinstance(sale_or_sharing, bool):
        raise _fail(path, "sale_or_sharing", f"{sale_or_sharing!r} must be true or false")
    tcf = _parse_tcf(path, raw.get("tcf"))
    columns_raw = raw["columns"]
    if not isinstance(columns_raw, dict) or not columns_raw:
        raise _fail(path, "columns", "must be a non-empty mapping of column name to rule")
    columns = tuple(
        _parse_column(path, name, spec, raw["subject_key"], share=recipient is not None)
        for name, spec in columns_raw.items()
    )
    subject = next((c for c in columns if c.name == raw["subject_key"]), None)
    linking = next((c for c in columns if c.consented.links_to_subject and c.name != raw["subject_key"]), None)
    if linking is not None and (subject is None or subject.consented.removes_value):
        # Erasure finds a subject's published rows by the subject key.
        raise _fail(
            path,
            f"columns.{raw['subject_key']}",
            f"the subject key must be kept or pseudonymised in consented rows when {linking.name!r} "
            f"uses {linking.consented.text!r}, or an erased subject's values could not be found",
        )
    quasi_identifiers, k_min = _parse_k_anonymity(path, raw, {c.name for c in columns})
    return Policy(
        path=path,
        sha256=sha256,
        dataset=export_name(raw["dataset"], recipient) if recipient else raw["dataset"],
        shared_dataset=raw["dataset"],
        kind=kind,
        recipient=recipient,
        source=raw["source"].rstrip("/"),
        subject_key=raw["subject_key"],
        event_time=raw["event_time"],
        purpose=raw["purpose"],
        retention_days=retention,
        check_consent_at=_enum(path, raw, "check_consent_at", CheckConsentAt, CheckConsentAt.RUN),
        on_no_consent=_enum(
            path, raw, "on_no_consent", OnNoConsent, OnNoConsent.DROP if recipient else OnNoConsent.ANONYMIZE
        ),
        on_retention_expired=_enum(path, raw, "on_retention_expired", OnRetentionExpired, OnRetentionExpired.DROP),
        subject_key_normalize=normalizations,
        columns=columns,
        description=_text(path, raw, "description"),
        sale_or_sharing=sale_or_sharing,
        tcf=tcf,
        quasi_identifiers=quasi_identifiers,
        k_min=k_min,
        keep_versions=_positive_int(path, raw, "keep_versions", 1 if recipient else DEFAULT_KEEP_VERSIONS),
        quarantine_retention_days=_positive_int(
            path, raw, "quarantine_retention_days", DEFAULT_QUARANTINE_RETENTION_DAYS, most=MAX_DAYS
        ),
        partition_by=_parse_partition_by(path, raw, columns, share=recipient is not None),
    )


def _parse_share(path: str, raw: dict) -> str:
    """The recipient of a share, after the checks that keep a share to consented rows."""
    recipient = raw.get("recipient")
    if not isinstance(recipient, str) or not _RECIPIENT.fullmatch(recipient):
        raise _fail(path, "recipient", f"{recipient!r} must be a name matching [a-z][a-z0-9_]*")
    if raw["purpose"] != f"share:{recipient}":
        raise _fail(path, "purpose", f"{raw['purpose']!r}: a share to {recipient} is for the purpose share:{recipient}")
    for key, only in (("on_no_consent", "drop"), ("on_retention_expired", "drop")):
        if raw.get(key, only) != only:
            raise _fail(path, key, f"{raw[key]!r}: a share exports consented rows only ({key}: {only})")
    for key in ("quasi_identifiers", "k_min"):
        if key in raw:
            raise _fail(path, key, "a share exports no anonymised rows, so k-anonymity does not apply")
    if raw.get("sale_or_sharing", True) is not True:
        raise _fail(path, "sale_or_sharing", "a share is sharing: a Global Privacy Control refusal always applies")
    if raw.get("keep_versions", 1) != 1:
        # The recipient's folder holds the current export only: an older one could still
        # hold customers who have withdrawn since.
        raise _fail(path, "keep_versions", f"{raw['keep_versions']!r}: a share keeps only its current export (1)")
    subject = raw["columns"].get(raw["subject_key"]) if isinstance(raw["columns"], dict) else None
    rule = subject.get("rule") if isinstance(subject, dict) else subject
    if rule != "pseudonymize":
        # Erasure, explain and the consent cross-check find a customer's exported rows by it.
        raise _fail(
            path,
            f"columns.{raw['subject_key']}",
            "a recipient gets its own pseudonym of the subject key: its rule must be pseudonymize",
        )
    return recipient


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: object, mark: yaml.Mark) -> None:
        super().__init__(f"{key!r} is given twice")
        self.key, self.problem_mark = key, mark


class _StrictLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys without a word; in a policy that silently
    overrides a rule (a pasted ``email: keep`` below ``email: {...}``), so it is refused."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen, merges = set(), 0
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    # `<<: *defaults`: keys written beside it override the merged ones. Two
                    # merged mappings giving one key resolve differently across PyYAML
                    # versions (yaml/pyyaml#953): one mapping merged, once, is unambiguous.
                    merges += 1
                    if merges > 1 or isinstance(value_node, yaml.SequenceNode):
                        raise _UnclearMerge(key_node.start_mark)
                    continue
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, str | int | float | bool) and key in seen:
                    raise _DuplicateKey(key, key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


class _UnclearMerge(_DuplicateKey):
    def __init__(self, mark: yaml.Mark) -> None:
        super().__init__("<<", mark)


# YAML 1.1 reads `030` as 24 (octal), `1:30` as 90 (base 60) and `1_000` as 1000: a
# policy's numbers are plain decimals, anything else stays text (and is refused where a
# number is expected).
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:int"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")
)


def load_policy(path: str | Path) -> Policy:
    """Read and check one policy file; raises PolicyError naming the file and key."""
    raw, text = read_strict_yaml(path, "the policy")
    return parse_policy(raw, str(path), hashlib.sha256(text).hexdigest())


def read_strict_yaml(path: str | Path, what: str) -> tuple[object, bytes]:
    """``(parsed, bytes)`` of a YAML file under the policies' rules (no key given twice,
    one merge a mapping, plain decimal numbers); PolicyError naming the file and line."""
    path = str(path)
    try:
        text = Path(path).read_bytes()
    except OSError as err:
        raise PolicyError(f"{path}: cannot read {what} ({err.strerror})") from None
    try:
        return yaml.load(text, Loader=_StrictLoader), text
    except _UnclearMerge as err:
        raise PolicyError(
            f"{path}: line {err.problem_mark.line + 1}: <<: merge one mapping, once (`<<: *name`)"
        ) from None
    except _DuplicateKey as err:
        raise PolicyError(f"{path}: line {err.problem_mark.line + 1}: {err.key}: given twice") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "YAML"
        raise PolicyError(f"{path}: {where}: not valid YAML") from None


def find_policies(folder: str | Path) -> list[Path]:
    return sorted(p for p in Path(folder).glob("*.y*ml") if p.suffix in (".yml", ".yaml"))
