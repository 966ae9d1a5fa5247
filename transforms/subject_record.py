"""How a staged or published folder carries its rows' subject, for the erasure purge.

An erased subject's rows are found in a retained version by its subject key column as
that version published it. A policy edited since (the key now pseudonymised rather than
kept, or dropped, or normalised otherwise) must not decide how an older folder is
searched: each folder records its own (``_subject_key.json``). Folders written before
the record existed are searched as the current policy publishes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from transforms.lake import subject_key_marker
from transforms.policy import Policy
from transforms.storage import read_text, write_text


@dataclass(frozen=True)
class SubjectRecord:
    column: str
    rule: str  # the consented rows' rule for the column: keep, pseudonymize or drop
    normalization: str  # Policy.normalization when it was written: "" or "lower"

    def searchable_by(self, policy: Policy) -> bool:
        """Whether an erased subject's hash (made under ``policy``'s normalisation) finds
        its rows here. A kept key is normalised again before hashing, which bridges a
        normalisation the policy added (``Ann-01`` lower-cased), never one it removed."""
        if self.rule == "pseudonymize":
            return self.normalization == policy.normalization
        if self.rule == "keep":
            return self.normalization in ("", policy.normalization)
        return False


def subject_record_of(policy: Policy) -> SubjectRecord:
    column = policy.column(policy.subject_key)
    rule = column.consented.name if column else "drop"
    return SubjectRecord(column=policy.subject_key, rule=rule, normalization=policy.normalization)


def write_subject_record(output_folder: str, policy: Policy) -> None:
    record = subject_record_of(policy)
    payload = {"column": record.column, "rule": record.rule, "normalization": record.normalization}
    write_text(subject_key_marker(output_folder), json.dumps(payload, sort_keys=True) + "\n")


def read_subject_record(output_folder: str, policy: Policy) -> SubjectRecord:
    text = read_text(subject_key_marker(output_folder))
    if not text:
        return subject_record_of(policy)
    recorded = json.loads(text)
    return SubjectRecord(column=recorded["column"], rule=recorded["rule"], normalization=recorded["normalization"])
