"""The lake layout: every path a run reads or writes, in one place.

The lake root is a local folder (the embedded set-up) or any Hadoop URI such as
``s3a://bucket/lake``; paths are joined as strings so both work unchanged.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=-]{0,199}")


# Dataset and recipient names are [a-z][a-z0-9_]*, so the mark is unambiguous.
_EXPORT_MARK = "-to-"


def export_name(dataset: str, recipient: str) -> str:
    """What a share's export is called in the lake's staging, reports and tombstones."""
    return f"{dataset}{_EXPORT_MARK}{recipient}"


def split_export(name: str) -> tuple[str, str] | None:
    """``(dataset, recipient)`` of an export's name; None for a dataset's own name."""
    if _EXPORT_MARK not in name:
        return None
    dataset, recipient = name.split(_EXPORT_MARK, 1)
    return dataset, recipient


def is_local(root: str) -> bool:
    return not _URI.match(root) or root.startswith("file://")


def local_path(path: str) -> str:
    return path[len("file://") :] if path.startswith("file://") else path


def check_run_id(run_id: str) -> str:
    """Run ids become folder names: letters, digits, ``_ . = -`` only."""
    from transforms.errors import ConsentgateError

    if not _RUN_ID.fullmatch(run_id or ""):
        raise ConsentgateError(f"run id {run_id!r} may only hold letters, digits and _ . = -")
    return run_id


def parse_run_date(text: str) -> date:
    from transforms.errors import ConsentgateError

    try:
        return date.fromisoformat(text)
    except (TypeError, ValueError):
        raise ConsentgateError(f"run date {text!r} is not a date of the form YYYY-MM-DD") from None


def judgement_instant(run_date: date) -> datetime:
    """The instant ``t`` a run judges at: the end of the run date, 00:00 UTC of the next day."""
    return datetime.combine(run_date + timedelta(days=1), datetime.min.time(), tzinfo=UTC)


def judged_at_marker(output_folder: str) -> str:
    """The file inside a staged or published folder that records the instant ``t`` it was
    judged at; readers skip files whose names start with ``_``."""
    return f"{output_folder}/_judged_at"


def inputs_read_marker(output_folder: str) -> str:
    """The file inside a staged or published folder that records when the run that made it
    started reading its inputs (the consent log, erasure requests, source): of two
    judgements at the same ``t``, the one that read later saw every late event the other saw."""
    return f"{output_folder}/_inputs_read_at"


def keys_marker(output_folder: str) -> str:
    """The file inside a staged or published folder that records the version and
    fingerprint of the keys its pseudonyms and ciphertexts were made with."""
    return f"{output_folder}/_keys.json"


def subject_key_marker(output_folder: str) -> str:
    """The file inside a staged or published folder that records how its rows carry their
    subject key (column, rule, normalisation), by which an erasure purge searches it."""
    return f"{output_folder}/_subject_key.json"


def purged_copy_name(version: str, attempt: int = 0) -> str:
    """The name an erasure purge gives the copy of ``version`` it makes current."""
    return f"{version}.erased{attempt or ''}"


def is_purged_copy_of(name: str, version: str) -> bool:
    """Whether ``name`` is a purge's copy of ``version`` (or of such a copy)."""
    return name.startswith(purged_copy_name(version))


def output_markers(output_folder: str) -> tuple[str, ...]:
    """Every marker file a staged or published folder carries (copied when it is rewritten)."""
    return (
        judged_at_marker(output_folder),
        inputs_read_marker(output_folder),
        keys_marker(output_folder),
        subject_key_marker(output_folder),
    )


@dataclass(frozen=True)
class Lake:
    root: str

    @classmethod
    def at(cls, root: str) -> Lake:
        root = root.rstrip("/")
        if is_local(root):
            root = os.path.abspath(local_path(root))
        return cls(root)

    @property
    def is_local(self) -> bool:
        return is_local(self.root)

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    @property
    def consent(self) -> str:
        return self.path("raw", "consent")

    @property
    def erasure_requests(self) -> str:
        return self.path("raw", "erasure_requests")

    def raw(self, name: str) -> str:
        return self.path("raw", name)

    @property
    def tombstones(self) -> str:
        return self.path("tombstones")

    def tombstones_of(self, dataset: str) -> str:
        return self.path("tombstones", dataset)

    @property
    def catalog(self) -> str:
        return self.path("_catalog")

    def lock(self, dataset: str) -> str:
        return self.path("locks", f"{dataset}.lock")

    def staging_run(self, dataset: str, run_id: str) -> str:
        return self.path("staging", dataset, run_id)

    def staging_data(self, dataset: str, run_id: str) -> str:
        return self.path("staging", dataset, run_id, "data")

    def staged_ledger(self, dataset: str, run_id: str) -> str:
        return self.path("staging", dataset, run_id, "ledger")

    def ledger(self, dataset: str, version: str) -> str:
        """What the version was judged from, for the next incremental run (see
        ``transforms/incremental.py``): pseudonymous subjects, restricted."""
        return self.path("ledger", dataset, version)

    def step_state(self, dataset: str, run_id: str, step: str) -> str:
        return self.path("staging", dataset, run_id, f"{step}.json")

    def clean(self, dataset: str) -> str:
        """Where a dataset's published versions live; a share's exports live under
        ``exports/<recipient>/<dataset>/``, one folder per recipient to hand over."""
        shared = split_export(dataset)
        if shared is not None:
            return self.path("exports", shared[1], shared[0])
        return self.path("clean", dataset)

    def clean_version(self, dataset: str, version: str) -> str:
        return f"{self.clean(dataset)}/{version}"

    def current_pointer(self, dataset: str) -> str:
        return f"{self.clean(dataset)}/CURRENT"

    @property
    def disclosure_log(self) -> str:
        """One JSON line per export made available to a third party."""
        return self.path("reports", "disclosures.jsonl")

    def quarantine(self, dataset: str) -> str:
        return self.path("quarantine", dataset)

    def quarantine_run(self, dataset: str, run_id: str) -> str:
        return self.path("quarantine", dataset, run_id)

    def quarantine_rows(self, dataset: str, run_id: str) -> str:
        """Rows that could not be judged, as they arrived (raw personal data: restricted)."""
        return self.path("quarantine", dataset, run_id, "rows")

    def failed_output(self, dataset: str, run_id: str) -> str:
        """A staged output that failed validation."""
        return self.path("quarantine", dataset, run_id, "failed_output")

    def data_docs(self, dataset: str, run_id: str) -> str:
        """The Great Expectations Data Docs site of a run's validation."""
        return self.path("reports", dataset, f"{run_id}_data_docs")

    def report_json(self, dataset: str, run_id: str) -> str:
        return self.path("reports", dataset, f"{run_id}.json")
