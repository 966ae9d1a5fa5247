"""State a run's steps leave for each other under ``staging/<dataset>/<run_id>/``:
``enforce.json``, ``validate.json``, ``publish.json``. Paths and counts only, never data."""

from __future__ import annotations

from transforms.errors import StepStateError
from transforms.lake import Lake
from transforms.storage import delete, read_json, write_json

STEPS = ("enforce", "validate", "publish")
# What a publish has done so far (its version, disclosure, whether the table points at
# it), kept across its retries so a retry finishes it; a new enforce forgets it.
PUBLISHING = "publishing"
# Written by another run's erasure purge before it rewrites this run's staged output:
# what was enforced (and counted) is not what is staged any more, even when the purge
# was stopped before its swap, and this run's erasure came after its own enforce. Only a
# new enforce forgets it; validate refuses while it is there.
PURGED_FOR_ERASURE = "purged_for_erasure"


def load_step(lake: Lake, dataset: str, run_id: str, step: str, required: bool = True) -> dict | None:
    path = lake.step_state(dataset, run_id, step)
    state = read_json(path)
    if state is None and required:
        raise StepStateError(f"{path}: missing; run the {step} step for run {run_id} first")
    return state


def save_step(lake: Lake, dataset: str, run_id: str, step: str, state: dict) -> None:
    write_json(lake.step_state(dataset, run_id, step), state)


def start_step(lake: Lake, dataset: str, run_id: str, step: str) -> None:
    """Forgets what this step and the later ones left in an earlier attempt of the run,
    so a retried or cleared run never reports a stale result as its own."""
    for later in STEPS[STEPS.index(step) :]:
        delete(lake.step_state(dataset, run_id, later))
    if step == "enforce":  # a new output: whatever an earlier one's publish did is moot
        delete(lake.step_state(dataset, run_id, PUBLISHING))
        delete(lake.step_state(dataset, run_id, PURGED_FOR_ERASURE))


def require_not_purged(lake: Lake, dataset: str, run_id: str) -> None:
    """Stops a validation of a staged output that an erasure purge has (or was about to
    have) rewritten: its counts no longer match, and after a purge stopped before its
    swap it may still hold the erased subject."""
    marker = lake.step_state(dataset, run_id, PURGED_FOR_ERASURE)
    if read_json(marker) is not None:
        raise StepStateError(f"{marker}: the staged output was purged for an erasure since; run enforce again")


def record_failure(lake: Lake, dataset: str, run_id: str, step: str, message: str, **fields) -> None:
    """Leaves the one-line reason (and what else the error says, e.g. ``superseded_by``)
    where the DAG's task and the report find it."""
    save_step(lake, dataset, run_id, step, {"ok": False, "error": message, **fields})
