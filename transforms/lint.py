"""``consentgate lint``: every problem in a folder of policies, one line each, before a
DAG ever runs them (in the spirit of ``fides evaluate``).

A policy that does not load is one finding (the loader's own message). A policy that
loads is also checked for what the loader accepts but a privacy officer would not:
a published column that does not say what it holds, personal data kept as it is with no
note saying why, an id a share exports as it is, a column named like personal data declared ``category: none``, two
policies for one dataset or one DAG id, policies that normalise subject keys
differently. With a local lake, the declared columns are checked against the source's
schema as the enforce job would check them (read by pyarrow, no Spark).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transforms.categories import CATEGORIES, NOT_PERSONAL, looks_personal
from transforms.errors import ConsentgateError, PolicyError
from transforms.policy import Policy, find_policies, load_policy


@dataclass(frozen=True)
class Finding:
    path: str
    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.where}: {self.problem}" if self.where else f"{self.path}: {self.problem}"


def column_findings(policy: Policy) -> list[Finding]:
    findings = []
    for column in policy.columns:
        where = f"columns.{column.name}"
        if column.dropped_everywhere:
            continue  # never published: what it holds does not reach anyone
        anonymized_keep = not policy.is_share and column.rule_for("anonymized").name == "keep"
        if policy.is_share and _an_id(column.name) and column.consented.name == "keep":
            # The same id in two recipients' copies (and in clean.<dataset>) joins them
            # directly, undoing their separate pseudonyms.
            findings.append(
                Finding(
                    policy.path,
                    where,
                    "a share exports this id as it is: every recipient gets the same value, so their copies "
                    "(and clean." + policy.shared_dataset + ") join on it; pseudonymise it",
                )
            )
        if _an_id(column.name) and anonymized_keep and not column.note:
            # An order id is no personal data by itself, but the source row it names does
            # name the customer: the anonymised row is anonymous only to those who cannot read it.
            findings.append(
                Finding(
                    policy.path,
                    where,
                    "anonymised rows keep this id as it is, which links each to its source row and so to the "
                    "customer for whoever reads the source: drop it there, or add a note saying who can",
                )
            )
        if column.category is None:
            choices = " | ".join(CATEGORIES)
            findings.append(Finding(policy.path, where, f"no category: declare what it holds ({choices})"))
            continue
        if column.category == NOT_PERSONAL:
            if column.name == policy.subject_key:
                findings.append(
                    Finding(policy.path, where, "the subject key identifies a person, but the category is none")
                )
            elif looks_personal(column.name):
                findings.append(
                    Finding(policy.path, where, "the name suggests personal data, but the category is none")
                )
            continue
        kept_in = [state for state in ("consented", "anonymized") if column.rule_for(state).name == "keep"]
        if kept_in and not column.note:
            states = " and ".join(f"{state} rows" for state in kept_in)
            findings.append(
                Finding(
                    policy.path,
                    where,
                    f"personal data ({column.category}) is kept as it is in {states}: "
                    "add a note saying why, or pseudonymise, mask, generalise or drop it",
                )
            )
    return findings


def _an_id(name: str) -> bool:
    lowered = name.lower()
    return lowered == "id" or lowered.endswith("_id") or name.endswith("Id")


def schema_findings(policy: Policy, lake_root: str) -> list[Finding]:
    import pyarrow.dataset as ds
    from pyspark.sql.pandas.types import from_arrow_schema

    from transforms.enforce import check_source_schema

    source = Path(lake_root) / policy.source
    try:
        # As Spark reads it: a source written by month (order_month=2026-11/) has the column.
        schema = from_arrow_schema(ds.dataset(str(source), format="parquet", partitioning="hive").schema)
    except (OSError, ValueError) as err:
        return [Finding(policy.path, "source", f"{source}: cannot read its schema ({type(err).__name__})")]
    try:
        check_source_schema(schema, policy, str(source))
    except ConsentgateError as err:
        return [Finding(policy.path, "source", str(err))]
    return []


def lint(paths: list[str], lake_root: str | None = None) -> tuple[int, list[Finding]]:
    """(policies checked, findings) for the given policy files and folders."""
    files: list[Path] = []
    for path in map(Path, paths):
        for file in find_policies(path) if path.is_dir() else [path]:
            if file.resolve() not in {known.resolve() for known in files}:  # named twice: linted once
                files.append(file)
    findings: list[Finding] = []
    seen: dict[str, str] = {}
    dag_ids: dict[str, str] = {}
    normalizations: dict[str, str] = {}
    for file in files:
        try:
            policy = load_policy(file)
        except PolicyError as err:
            findings.append(Finding(str(file), "", str(err).removeprefix(f"{file}: ")))
            continue
        if policy.dataset in seen:
            findings.append(
                Finding(policy.path, "dataset", f"{policy.dataset!r} is also the dataset of {seen[policy.dataset]}")
            )
        elif policy.dag_id in dag_ids:
            where = "recipient" if policy.is_share else "dataset"
            findings.append(
                Finding(policy.path, where, f"DAG id {policy.dag_id!r} is also that of {dag_ids[policy.dag_id]}")
            )
        if normalizations and policy.normalization not in normalizations:
            # Tombstones hash keys as their dataset normalised them; the runs would stop.
            other, other_path = next(iter(normalizations.items()))
            findings.append(
                Finding(
                    policy.path,
                    "subject_key_normalize",
                    f"[{policy.normalization}] differs from [{other}] of {other_path}: the datasets "
                    "of one lake share erasure tombstones, so their runs would stop",
                )
            )
        normalizations.setdefault(policy.normalization, policy.path)
        seen.setdefault(policy.dataset, policy.path)
        dag_ids.setdefault(policy.dag_id, policy.path)
        findings.extend(column_findings(policy))
        if lake_root is not None:
            findings.extend(schema_findings(policy, lake_root))
    return len(files), findings
